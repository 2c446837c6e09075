// Page: Settings > Authentication. How users sign in (internal passwords, an LDAP directory, OAuth), the LDAP
// settings with their test button and the group-to-team mapping. The OAuth section is oauth_settings.js's form,
// shown when OAuth is the method. Administrators created here with a password always sign in internally.
import {api} from '../api.js';
import {$, $$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {session} from '../session.js';
import {render} from '../shell.js';
import {renderOAuthSettings} from './oauth_settings.js';

const METHODS = [[1, 'Internal', 'Users and passwords kept by this server.'],
  [2, 'LDAP', 'Users sign in with their directory account (OpenLDAP, Active Directory...).'],
  [3, 'OAuth', 'Users sign in with an OpenID Connect / OAuth identity provider.']];
const SECURITY = [['ldaps', 'LDAPS (TLS from the first byte, usually port 636)'], ['starttls', 'StartTLS (plain port, then TLS, usually 389)'],
  ['plain', 'None: plain text (every password is readable on the network)']];

function securityOf(ldap) {
  if (ldap.TLSConfig && ldap.TLSConfig.TLS) return 'ldaps';
  return ldap.StartTLS ? 'starttls' : (ldap.AllowPlainText ? 'plain' : 'ldaps');
}

// The LDAPSettings the form describes, as PUT /api/settings and POST /api/ldap/check read them.
function ldapSettingsOf(form) {
  const security = form.elements.Security.value;
  const ldap = {URLs: form.elements.URLs.value.split(/[\s,]+/).filter(Boolean), StartTLS: security === 'starttls',
    AllowPlainText: security === 'plain', TLSConfig: {TLS: security === 'ldaps', TLSSkipVerify: form.elements.TLSSkipVerify.checked},
    AnonymousMode: form.elements.AnonymousMode.checked, ReaderDN: form.elements.ReaderDN.value,
    AutoCreateUsers: form.elements.AutoCreateUsers.checked,
    SearchSettings: form.elements.BaseDN.value.trim() ? [{BaseDN: form.elements.BaseDN.value, Filter: form.elements.Filter.value, UserNameAttribute: form.elements.UserNameAttribute.value}] : [],
    GroupSearchSettings: form.elements.GroupBaseDN.value.trim() ? [{GroupBaseDN: form.elements.GroupBaseDN.value, GroupFilter: form.elements.GroupFilter.value, GroupAttribute: form.elements.GroupAttribute.value}] : []};
  if (form.elements.Password.value) ldap.Password = form.elements.Password.value;
  return ldap;
}
// The CA file chosen in the form, uploaded before the settings that use it are saved or tested.
async function uploadChosenCa(form) {
  const file = form.elements.CACert.files[0]; if (!file) return;
  const data = new FormData(); data.append('file', file, file.name);
  await api('POST', '/api/upload/tls/ca?folder=ldap', data);
  form.elements.CACert.value = ''; $('#ldap-ca-state').textContent = `Uploaded: ${file.name}`;
}

function showCheck(box, result, teams) {
  const byId = new Map(teams.map(t => [t.Id, t.Name]));
  box.innerHTML = `<p class="ok-text"><strong>Connection test passed.</strong></p><ul>${result.Steps.map(s => `<li>${esc(s)}</li>`).join('')}</ul>
    <h4>Directory groups and the teams they map to</h4>${result.Groups.length ? `<table><thead><tr><th>Group</th><th>Team</th></tr></thead><tbody>
    ${result.Groups.map(g => `<tr><td>${esc(g.Name)}</td><td>${g.TeamID ? `<a href="#/teams/${g.TeamID}">${esc(byId.get(g.TeamID) || g.Name)}</a>`
      : '<span class="muted">no team of that name: members join nothing</span>'}</td></tr>`).join('')}</tbody></table>`
      : '<p class="muted">No group found.</p>'}`;
}

export async function pageAuthentication() {
  session.currentEnv = null;
  const [settings, teams] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/teams')]);
  const ldap = settings.LDAPSettings || {}, search = (ldap.SearchSettings || [])[0] || {}, groups = (ldap.GroupSearchSettings || [])[0] || {};
  const tls = ldap.TLSConfig || {}, security = securityOf(ldap);
  render('Authentication', `<form class="card" id="auth-settings"><h2>Authentication</h2>
    <fieldset><legend>How users sign in</legend>${METHODS.map(([value, label, hint]) => `<label class="check"><input type="radio" name="AuthenticationMethod" aria-label="${label}"
      value="${value}" ${settings.AuthenticationMethod === value ? 'checked' : ''}> ${label} <span class="muted">${hint}</span></label>`).join('')}
      <p class="muted">Administrators with a password here (the one made at setup among them) always sign in with it, so a directory that is down locks nobody out.</p></fieldset>
    <section id="auth-ldap" aria-label="LDAP settings"><h3>LDAP server</h3>
      <label for="l-urls">Servers (host:port, one per line; when one does not answer, the next is tried)</label>
      <textarea id="l-urls" name="URLs" rows="2" placeholder="ldap.example.com:636">${esc((ldap.URLs || []).join('\n'))}</textarea>
      <label for="l-security">Connection security</label><select id="l-security" name="Security">
        ${SECURITY.map(([value, label]) => `<option value="${value}" ${value === security ? 'selected' : ''}>${label}</option>`).join('')}</select>
      <label for="l-ca">CA certificate (PEM) that signs the directory's certificate</label><input id="l-ca" name="CACert" type="file" accept=".pem,.crt,.cer">
      <p class="muted" id="ldap-ca-state">${tls.TLSCACert ? 'A CA certificate is uploaded; choose a file to replace it.' : 'None uploaded: the system\'s CAs are trusted.'}</p>
      <label class="check"><input type="checkbox" name="TLSSkipVerify" ${tls.TLSSkipVerify ? 'checked' : ''}> Skip certificate verification (anyone on the way can read the passwords)</label>
      <h3>Bind account</h3>
      <label class="check"><input type="checkbox" name="AnonymousMode" ${ldap.AnonymousMode ? 'checked' : ''}> Anonymous mode (search without a bind account)</label>
      <label for="l-reader">Reader DN</label><input id="l-reader" name="ReaderDN" autocomplete="off" placeholder="cn=readonly,dc=example,dc=org" value="${esc(ldap.ReaderDN || '')}">
      <label for="l-password">Password (leave empty to keep the stored one)</label><input id="l-password" name="Password" type="password" autocomplete="new-password">
      <h3>User search</h3>
      <label for="l-base">Base DN</label><input id="l-base" name="BaseDN" placeholder="ou=people,dc=example,dc=org" value="${esc(search.BaseDN || '')}">
      <label for="l-attr">Username attribute</label><input id="l-attr" name="UserNameAttribute" placeholder="uid" value="${esc(search.UserNameAttribute || 'uid')}">
      <label for="l-filter">Filter (optional)</label><input id="l-filter" name="Filter" placeholder="(objectClass=inetOrgPerson)" value="${esc(search.Filter || '')}">
      <label class="check"><input type="checkbox" name="AutoCreateUsers" ${ldap.AutoCreateUsers ? 'checked' : ''}> Create users on their first sign-in</label>
      <h3>Group search and team mapping</h3>
      <p class="muted">At each sign-in a user joins the teams named like their directory groups, and leaves those they joined that way when they leave the group. Memberships made by hand stay.</p>
      <label for="l-gbase">Group base DN</label><input id="l-gbase" name="GroupBaseDN" placeholder="ou=groups,dc=example,dc=org" value="${esc(groups.GroupBaseDN || '')}">
      <label for="l-gattr">Group membership attribute</label><input id="l-gattr" name="GroupAttribute" placeholder="member" value="${esc(groups.GroupAttribute || 'member')}">
      <label for="l-gfilter">Group filter (optional)</label><input id="l-gfilter" name="GroupFilter" placeholder="(objectClass=groupOfNames)" value="${esc(groups.GroupFilter || '')}">
      <p><button type="button" id="ldap-test">Test connectivity</button></p>
      <div id="ldap-check" role="status" aria-live="polite"></div></section>
    <div class="error" role="alert"></div><p id="auth-save"><button class="primary" type="submit">Save authentication settings</button>
    <a href="#/settings">Back to the settings</a></p></form><section id="auth-oauth" aria-label="OAuth settings"></section>`, '<a href="#/settings">Settings</a> / Authentication');
  const form = $('#auth-settings');
  const method = () => +form.elements.AuthenticationMethod.value;
  // With OAuth chosen, its own form (whose save also makes OAuth the method) replaces the LDAP part and its button.
  const showSections = () => { $('#auth-ldap').hidden = method() !== 2; $('#auth-oauth').hidden = method() !== 3;
    $('#auth-save').hidden = method() === 3; };
  $$('input[name=AuthenticationMethod]', form).forEach(radio => radio.addEventListener('change', showSections));
  showSections();
  $('#ldap-test').addEventListener('click', async () => {
    const box = $('#ldap-check'), button = $('#ldap-test');
    button.disabled = true; box.innerHTML = '<p class="muted">Testing…</p>';
    try {
      await uploadChosenCa(form);
      showCheck(box, await api('POST', '/api/ldap/check', {LDAPSettings: ldapSettingsOf(form)}), teams);
    } catch (err) {
      if (err.name === 'AbortError') return;
      box.innerHTML = '<p class="error"><strong>Connection test failed.</strong> <span class="check-message"></span></p>';
      $('.check-message', box).textContent = err.message + (err.details && err.details !== err.message ? ` (${err.details})` : '');
    } finally { button.disabled = false; }
  });
  onSubmit(form, async () => {
    await uploadChosenCa(form);
    await api('PUT', '/api/settings', {AuthenticationMethod: method(), LDAPSettings: ldapSettingsOf(form)});
    form.elements.Password.value = ''; toast('Authentication settings saved');
    session.publicSettings = null;
  });
  await renderOAuthSettings($('#auth-oauth'), {embedded: true});
}
