// Pages: users, settings (with the activity log retention and analytics), my account and API keys.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {$} from '../dom.js';
import {formError, onSubmit, toast} from '../feedback.js';
import {esc, fmtAgo, fmtDate} from '../format.js';
import {motdSettingsCard} from './motd.js';
import {session} from '../session.js';
import {render} from '../shell.js';
import {dataTable} from '../table.js';

export async function pageUsers() {
  session.currentEnv = null;
  // With LDAP or OAuth on, a user made without a password signs in with their directory or provider account.
  const method = (await api('GET', '/api/settings/public')).AuthenticationMethod;
  const ldap = method === 2 || method === 3;
  render('Users', `<div class="toolbar"><h2>Users</h2></div><form class="card" id="user-create"><h3>Add a user</h3>
    <div class="row"><div><label for="u-name">Username</label><input id="u-name" name="Username" required autocomplete="off"></div>
    <div><label for="u-password">Password (12 characters or more${ldap ? `; leave empty for a user who signs in through ${method === 2 ? 'the directory' : 'OAuth'} only` : ''})</label><input id="u-password" name="Password" type="password" ${ldap ? '' : 'required'} autocomplete="new-password" data-error-hint="password"></div>
    <div><label for="u-role">Role</label><select id="u-role" name="Role">${[constants.UserRoles.Standard, constants.UserRoles.Administrator].map(role => `<option value="${role}">${esc(constants.UserRoleNames[role])}</option>`).join('')}</select></div></div>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create user</button></p></form><div class="card" id="users"></div>`);
  const table = dataTable($('#users'), {id: u => u.Id, selectable: true, filterPlaceholder: 'Filter users', actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'name', label: 'Name', value: u => u.Username}, {key: 'role', label: 'Role', value: u => constants.UserRoleNames[u.Role]},
      {key: 'created', label: 'Created', value: u => u.CreationDate, html: u => fmtDate(u.CreationDate), cls: 'hide-sm'}],
    onSelectionChange: sel => { $('#users [data-action]').disabled = sel.size === 0; }});
  const load = async () => table.setRows(await api('GET', '/api/users'));
  $('#users').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    if (!confirm('Remove the selected users and their API keys?')) return;
    for (const id of table.selected()) { try { await api('DELETE', `/api/users/${id}`); } catch (err) { toast(err.message, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#user-create'), async data => {
    const body = {Username: data.get('Username'), Role: +data.get('Role')};
    if (data.get('Password') || !ldap) body.Password = data.get('Password');
    const u = await api('POST', '/api/users', body);
    toast(`User ${u.Username} created`); $('#user-create').reset(); await load();
  });
  await load();
}
export async function pageSettings() {
  session.currentEnv = null;
  const [s, pub] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/settings/public')]);
  render('Settings', `<div class="card"><h2>Authentication</h2><p>How users sign in: internal passwords, an LDAP directory or OAuth.
    <a href="#/settings/authentication">Authentication settings</a>
    · <a href="#/settings/oauth">Authentication: OAuth 2.0 / OpenID Connect sign-in</a></p></div><form class="card" id="settings"><h2>Settings</h2>
    <label for="s-timeout">Session lifetime (e.g. 8h, 30m)</label><input id="s-timeout" name="UserSessionTimeout" value="${esc(s.UserSessionTimeout)}">
    <label for="s-snapshot">Snapshot interval</label><input id="s-snapshot" name="SnapshotInterval" value="${esc(s.SnapshotInterval || '')}">
    <label for="s-logo">Logo URL</label><input id="s-logo" name="LogoURL" value="${esc(s.LogoURL || '')}">
    ${pub.AnalyticsAvailable ? `<p><label class="check"><input type="checkbox" name="EnableTelemetry" ${s.EnableTelemetry ? 'checked' : ''}> Send anonymous usage statistics</label></p>` : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save settings</button></p></form>`);
  onSubmit($('#settings'), async data => {
    const body = {UserSessionTimeout: data.get('UserSessionTimeout'), SnapshotInterval: data.get('SnapshotInterval'), LogoURL: data.get('LogoURL')};
    if (pub.AnalyticsAvailable) body.EnableTelemetry = !!data.get('EnableTelemetry');
    await api('PUT', '/api/settings', body); toast('Settings saved');
  });
  motdSettingsCard($('#main'), s);
  await settingsAuditPanel();
}
export async function pageAccount() {
  session.currentEnv = null;
  render('My account', `<div class="grid2"><form class="card" id="password"><h3>Change password</h3>
    <label for="a-current">Current password</label><input id="a-current" type="password" name="Password" required autocomplete="current-password" data-error-hint="current password">
    <label for="a-new">New password (12 characters or more)</label><input id="a-new" type="password" name="NewPassword" required autocomplete="new-password" data-error-hint="at least|characters">
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Change password</button></p></form>
    <form class="card" id="key-create"><h3>Add an API key</h3><label for="k-desc">Description</label><input id="k-desc" name="description" required>
    <label for="k-password">Your password</label><input id="k-password" type="password" name="password" required autocomplete="current-password" data-error-hint="password">
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Add API key</button></p><div id="k-raw"></div></form></div>
    <div class="card"><h3>API keys of ${esc(session.me.Username)}</h3><div id="keys"></div></div>`);
  const table = dataTable($('#keys'), {id: k => k.id, selectable: true, filterPlaceholder: 'Filter keys', empty: 'No API keys.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'desc', label: 'Description', value: k => k.description}, {key: 'prefix', label: 'Starts with', value: k => k.prefix, html: k => `<span class="mono">${esc(k.prefix)}…</span>`},
      {key: 'created', label: 'Created', value: k => k.dateCreated, html: k => fmtDate(k.dateCreated)}, {key: 'used', label: 'Last used', value: k => k.lastUsed, html: k => k.lastUsed ? fmtAgo(k.lastUsed) : 'never'}],
    onSelectionChange: sel => { $('#keys [data-action]').disabled = sel.size === 0; }});
  const load = async () => table.setRows(await api('GET', `/api/users/${session.me.Id}/tokens`));
  $('#keys').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    for (const id of table.selected()) { try { await api('DELETE', `/api/users/${session.me.Id}/tokens/${id}`); } catch (err) { toast(err.message, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#key-create'), async data => {
    const r = await api('POST', `/api/users/${session.me.Id}/tokens`, {description: data.get('description'), password: data.get('password')});
    $('#k-raw').innerHTML = `<p>Copy this key now, it is shown only once:</p><pre class="mono" id="raw-key">${esc(r.rawAPIKey)}</pre>`;
    $('#key-create').reset(); await load();
  });
  onSubmit($('#password'), async data => {
    await api('PUT', `/api/users/${session.me.Id}/passwd`, {Password: data.get('Password'), NewPassword: data.get('NewPassword')});
    toast('Password changed: log in again'); location.hash = '#/login';
  });
  await load();
}
async function settingsAuditPanel() {
  const main = document.querySelector('main'); if (!main) return;
  const [s, preview] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/telemetry/preview')]);
  const card = document.createElement('div'); card.className = 'card';
  card.innerHTML = `<h2>Activity log and analytics</h2><form id="af"><label for="ret">Keep activity log entries for (days, 0 = forever)</label>
    <input id="ret" type="number" min="0" max="36500" value="${esc(s.ActivityLogRetentionDays)}">
    <div class="error" role="alert"></div><button class="primary">Save</button></form>
    <h3>Anonymous analytics</h3>${preview.Available ? `<p class="muted">${preview.Enabled ? 'On' : 'Off'}${preview.URL ? '' : ' (no --analytics-url is set, so nothing is sent)'}.
    At most once a day, exactly this is sent${preview.LastSent ? ', last on ' + new Date(preview.LastSent * 1000).toLocaleString() : ''}:</p>
    <pre id="preview">${esc(JSON.stringify(preview.Payload, null, 2))}</pre>` : '<p class="muted">Disabled by --no-analytics.</p>'}`;
  main.appendChild(card);
  const af = card.querySelector('#af');
  af.onsubmit = async e => { e.preventDefault();
    try { await api('PUT', '/api/settings', {ActivityLogRetentionDays: +af.ret.value}); formError(af, {message: 'Saved.'}); } catch (err) { formError(af, err); } };
}
