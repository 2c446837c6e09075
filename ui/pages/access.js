// Pages: who has access to an environment (roles), what standard users may do there (security settings),
// and resources shared beyond their owners (resource controls).
import {api} from '../api.js';
import {constants} from '../constants.js';
import {formError} from '../feedback.js';
import {esc} from '../format.js';
import {$app, bindShell, shell} from '../shell.js';
import {roleOptions} from '../widgets.js';

export async function pageEndpointAccess(id) {
  const ep = await api('GET', `/api/endpoints/${id}`);
  await accessEditor({title: `Access to ${ep.Name}`, target: ep, path: `/api/endpoints/${id}`, again: () => pageEndpointAccess(id),
    intro: 'Administrators always have access. Everyone else sees this environment only when listed here (or in its group\'s access), and can do what the role allows.',
    footer: `<p><a href="#/env/${ep.Id}/security">Security settings of this environment</a></p>`});
}
// Who has access to an environment group: the roles apply to every environment of the group.
export async function pageGroupAccess(id) {
  const group = await api('GET', `/api/endpoint_groups/${id}`);
  await accessEditor({title: `Access to group ${group.Name}`, target: group, path: `/api/endpoint_groups/${id}`, again: () => pageGroupAccess(id),
    intro: 'Who is listed here has access to every environment of this group, with the role given (an environment\'s own access list comes first).',
    footer: `<p><a href="#/groups/${group.Id}">Edit the group</a> · <a href="#/groups">All groups</a></p>`,
    crumbs: `<a href="#/groups">Groups</a> / ${esc(group.Name)} / Access`});
}
// The access list of an environment or a group: {UserAccessPolicies, TeamAccessPolicies} of `target`, saved with PUT `path`.
async function accessEditor({title, target, path, again, intro, footer, crumbs}) {
  const [users, teams] = await Promise.all([api('GET', '/api/users'), api('GET', '/api/teams')]);
  const policies = {User: target.UserAccessPolicies || {}, Team: target.TeamAccessPolicies || {}};
  const nameOf = (kind, sid) => kind === 'User' ? ((users.find(u => u.Id === +sid) || {}).Username || `user ${sid}`)
                                               : ((teams.find(t => t.Id === +sid) || {}).Name || `team ${sid}`);
  const rows = ['User', 'Team'].flatMap(kind => Object.entries(policies[kind]).map(([sid, p]) => ({kind, sid, role: p.RoleId || constants.EnvironmentRoles.Standard})));
  $app.innerHTML = shell(`<div class="card"><h2>${esc(title)}</h2>
    <p class="muted">${esc(intro)}</p>
    <table><tr><th>User or team</th><th>Role</th><th></th></tr>${rows.map(r => `<tr><td>${r.kind === 'Team' ? 'Team ' : ''}${esc(nameOf(r.kind, r.sid))}</td>
      <td><select data-kind="${r.kind}" data-sid="${esc(r.sid)}" aria-label="role">${roleOptions(r.role, constants.EnvironmentRoleNames)}</select></td>
      <td><button class="danger" data-remove="${r.kind}:${esc(r.sid)}">Remove access</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">Administrators only.</td></tr>'}</table>
    <form id="f"><h3>Give access</h3><label for="s">User or team</label><select id="s" required>
      ${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<option value="User:${u.Id}">${esc(u.Username)}</option>`).join('')}
      ${teams.map(t => `<option value="Team:${t.Id}">Team ${esc(t.Name)}</option>`).join('')}</select>
      <label for="r">Role</label><select id="r">${roleOptions(constants.EnvironmentRoles.Standard, constants.EnvironmentRoleNames)}</select>
      <div class="error" role="alert"></div><button class="primary">Give access</button></form>
    ${footer}</div>`, crumbs);
  bindShell();
  const save = async () => { await api('PUT', path, {UserAccessPolicies: policies.User, TeamAccessPolicies: policies.Team}); again(); };
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const [kind, sid] = f.s.value.split(':');
    policies[kind][sid] = {RoleId: +f.r.value}; try { await save(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('select[data-kind]').forEach(s => s.onchange = () => { policies[s.dataset.kind][s.dataset.sid] = {RoleId: +s.value}; save().catch(err => formError(f, err)); });
  document.querySelectorAll('[data-remove]').forEach(b => b.onclick = () => { const [kind, sid] = b.dataset.remove.split(':'); delete policies[kind][sid]; save().catch(err => formError(f, err)); });
}
export async function pageEndpointSecurity(id) {
  const ep = await api('GET', `/api/endpoints/${id}`);
  const current = ep.SecuritySettings || {};
  $app.innerHTML = shell(`<div class="card"><h2>Security settings of ${esc(ep.Name)}</h2>
    <p class="muted">What users who are not administrators of this environment may do. Everything here is off by default: each switch can give root on the host.</p>
    <form id="f">${Object.entries(constants.SecuritySwitches).map(([k, label]) => `<label class="check"><input type="checkbox" name="${k}" ${current[k] ? 'checked' : ''}> ${esc(label)}</label>`).join('')}
    <div class="error" role="alert"></div><button class="primary">Save</button></form>
    <p><a href="#/env/${ep.Id}/access">Who has access</a></p></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const body = {};
    Object.keys(constants.SecuritySwitches).forEach(k => { body[k] = f.elements[k].checked; });
    try { await api('PUT', `/api/endpoints/${id}`, {SecuritySettings: body}); formError(f, {message: 'Saved.'}); } catch (err) { formError(f, err); } };
}
export async function pageResourceControls() {
  const [controls, users, teams] = await Promise.all([api('GET', '/api/resource_controls'), api('GET', '/api/users'), api('GET', '/api/teams')]);
  const kinds = constants.ResourceControlTypeNames;
  const who = rc => rc.Public ? 'everyone with access to the environment' : rc.AdministratorsOnly ? 'administrators only' :
    [...rc.UserAccesses.map(a => (users.find(u => u.Id === a.UserId) || {}).Username || `user ${a.UserId}`),
     ...rc.TeamAccesses.map(a => 'team ' + ((teams.find(t => t.Id === a.TeamId) || {}).Name || a.TeamId))].join(', ') || 'nobody but administrators';
  $app.innerHTML = shell(`<div class="card"><h2>Shared resources</h2>
    <p class="muted">What a user creates is theirs and their teams'. Here an administrator shares a resource with others, makes it public, or keeps it to administrators.</p>
    <table><tr><th>Resource</th><th>Kind</th><th>Who may use it</th><th></th></tr>${controls.map(rc => `<tr><td>${esc(rc.ResourceId.slice(0, 24))}</td>
      <td>${esc(kinds[rc.Type] || rc.Type)}</td><td>${esc(who(rc))}</td><td><button class="danger" data-del="${rc.Id}">Remove</button></td></tr>`).join('')
      || '<tr><td colspan="4" class="muted">Nothing is shared beyond its owners.</td></tr>'}</table>
    <form id="f"><h3>Share a resource</h3><label for="rid">Full id (the name, for a volume)</label><input id="rid" required>
      <label for="k">Kind</label><select id="k">${roleOptions(constants.ResourceControlTypes.Container, kinds)}</select>
      <label for="w">With</label><select id="w" multiple>${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<option value="u${u.Id}">${esc(u.Username)}</option>`).join('')}
        ${teams.map(t => `<option value="t${t.Id}">team ${esc(t.Name)}</option>`).join('')}</select>
      <label class="check"><input type="checkbox" id="pub"> Public: everyone with access to the environment</label>
      <label class="check"><input type="checkbox" id="adm"> Administrators only</label>
      <div class="error" role="alert"></div><button class="primary">Share</button></form></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const chosen = [...f.w.selectedOptions].map(o => o.value);
    try { await api('POST', '/api/resource_controls', {ResourceID: f.rid.value.trim(), Type: +f.k.value, Public: f.pub.checked, AdministratorsOnly: f.adm.checked,
      Users: chosen.filter(v => v[0] === 'u').map(v => +v.slice(1)), Teams: chosen.filter(v => v[0] === 't').map(v => +v.slice(1))}); pageResourceControls(); }
    catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/resource_controls/${b.dataset.del}`); pageResourceControls(); });
}
