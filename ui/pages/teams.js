// Pages: teams and one team's members.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {formError} from '../feedback.js';
import {esc} from '../format.js';
import {isAdmin, session} from '../session.js';
import {$app, bindShell, shell} from '../shell.js';
import {roleOptions} from '../widgets.js';

export async function pageTeams() {
  const [teams, users] = await Promise.all([api('GET', '/api/teams'), api('GET', '/api/users')]);
  const members = await Promise.all(teams.map(t => api('GET', `/api/teams/${t.Id}/memberships`).catch(() => [])));
  const userName = id => (users.find(u => u.Id === id) || {}).Username || `user ${id}`;
  const admin = isAdmin();
  $app.innerHTML = shell(`<div class="card"><h2>Teams</h2><table><tr><th>Team</th><th>Members</th><th></th></tr>
    ${teams.map((t, i) => `<tr><td><a href="#/teams/${t.Id}">${esc(t.Name)}</a></td>
      <td>${members[i].map(m => esc(userName(m.UserID)) + (m.Role === constants.TeamRoles.Leader ? ' <span class="badge">leader</span>' : '')).join(', ')}</td>
      <td>${admin ? `<button class="danger" data-del="${t.Id}">Remove</button>` : ''}</td></tr>`).join('') || '<tr><td colspan="3" class="muted">No team yet.</td></tr>'}</table>
    ${admin ? `<form id="f"><h3>Add team</h3><label for="n">Name</label><input id="n" required>
      <label for="l">Team leader (optional)</label><select id="l"><option value="">none</option>
      ${users.map(u => `<option value="${u.Id}">${esc(u.Username)}</option>`).join('')}</select>
      <div class="error" role="alert"></div><button class="primary">Create team</button></form>` : ''}</div>`);
  bindShell();
  const f = document.getElementById('f');
  if (f) f.onsubmit = async e => { e.preventDefault();
    try { await api('POST', '/api/teams', {Name: f.n.value, TeamLeaders: f.l.value ? [+f.l.value] : []}); pageTeams(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => {
    if (confirm('Remove this team? Its members lose the access given to the team.')) { await api('DELETE', `/api/teams/${b.dataset.del}`); pageTeams(); } });
}
export async function pageTeam(id) {
  const [team, memberships, users] = await Promise.all([api('GET', `/api/teams/${id}`), api('GET', `/api/teams/${id}/memberships`), api('GET', '/api/users')]);
  const admin = isAdmin();
  const leads = memberships.some(m => m.UserID === session.me.Id && m.Role === constants.TeamRoles.Leader);
  const userName = uid => (users.find(u => u.Id === uid) || {}).Username || `user ${uid}`;
  const outside = users.filter(u => !memberships.some(m => m.UserID === u.Id));
  $app.innerHTML = shell(`<div class="card"><h2>Team ${esc(team.Name)}</h2><table><tr><th>User</th><th>Role in the team</th><th></th></tr>
    ${memberships.map(m => `<tr><td>${esc(userName(m.UserID))}</td><td>${admin ? `<select data-role="${m.Id}" aria-label="role of ${esc(userName(m.UserID))}">
      ${roleOptions(m.Role, constants.TeamRoleNames)}</select>` : esc(constants.TeamRoleNames[m.Role])}</td>
      <td>${admin || (leads && m.Role === constants.TeamRoles.Member) ? `<button class="danger" data-del="${m.Id}">Remove from team</button>` : ''}</td></tr>`).join('')}</table>
    ${admin || leads ? `<form id="f"><h3>Add a member</h3><label for="u">User</label><select id="u" required>
      ${outside.map(u => `<option value="${u.Id}">${esc(u.Username)}</option>`).join('')}</select>
      ${admin ? `<label for="r">Role</label><select id="r">${roleOptions(constants.TeamRoles.Member, constants.TeamRoleNames)}</select>` : ''}
      <div class="error" role="alert"></div><button class="primary">Add</button></form>` : ''}
    <p><a href="#/teams">All teams</a></p></div>`);
  bindShell();
  const f = document.getElementById('f');
  if (f) f.onsubmit = async e => { e.preventDefault(); const r = document.getElementById('r');
    try { await api('POST', '/api/team_memberships', {UserID: +f.u.value, TeamID: +id, Role: r ? +r.value : constants.TeamRoles.Member}); pageTeam(id); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/team_memberships/${b.dataset.del}`); pageTeam(id); });
  document.querySelectorAll('[data-role]').forEach(s => s.onchange = async () => { await api('PUT', `/api/team_memberships/${s.dataset.role}`, {Role: +s.value}); pageTeam(id); });
}
