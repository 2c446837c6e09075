// Pages: environment groups (administrators): the list, a new group, one group's name, tags and environments.
// Group 1, "Unassigned", holds every environment no other group has; it cannot be removed.
import {api} from '../api.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {render} from '../shell.js';
import {dataTable} from '../table.js';
import {checkboxes, checkedIds, statusBadge} from '../widgets.js';

export const UNASSIGNED_GROUP = 1;
// A group's name from the list the caller may read (a standard user reads only the groups they are in).
export const groupName = (groups, id) => (groups.find(g => g.Id === id) || {}).Name || (id === UNASSIGNED_GROUP ? 'Unassigned' : `Group ${id}`);
const tagBadges = (tags, ids) => (ids || []).map(id => `<span class="badge">${esc((tags.find(t => t.ID === id) || {}).Name || `tag ${id}`)}</span>`).join('');
const tagBoxes = (tags, chosen = []) => tags.map(t => `<label class="inline"><input type="checkbox" name="tag" value="${t.ID}" ${chosen.includes(t.ID) ? 'checked' : ''}> ${esc(t.Name)}</label>`).join('')
  || '<p class="muted">No tag yet (<a href="#/tags">add tags</a>).</p>';

export async function pageGroups() {
  const [groups, envs, tags] = await Promise.all([api('GET', '/api/endpoint_groups'), api('GET', '/api/endpoints'), api('GET', '/api/tags').catch(() => [])]);
  const members = id => envs.filter(ep => ep.GroupId === id);
  const main = render('Groups', `<div class="toolbar"><h2>Environment groups</h2></div>
    <div class="card"><p class="muted">A group gathers environments: the home page shows them under its name, and who has access to the group
    has access to each of its environments.</p><div id="group-list"></div><div class="error" role="alert" id="err"></div></div>
    <div class="card"><h3>Add group</h3><form id="f"><label for="group-name">Name</label><input id="group-name" name="Name" required>
    <label for="group-description">Description</label><input id="group-description" name="Description">
    <p class="muted">Tags</p><div>${tagBoxes(tags)}</div>
    <p class="muted">Environments (taken out of their current group)</p>${checkboxes(envs, 'ep')}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create group</button></p></form></div>`);
  dataTable($('#group-list'), {id: g => g.Id, rows: groups, filterPlaceholder: 'Filter groups', empty: 'No group yet.', columns: [
    {key: 'name', label: 'Name', value: g => g.Name, html: g => `<a href="#/groups/${g.Id}">${esc(g.Name)}</a>`},
    {key: 'description', label: 'Description', value: g => g.Description, cls: 'hide-sm'},
    {key: 'tags', label: 'Tags', value: g => (g.TagIds || []).map(id => (tags.find(t => t.ID === id) || {}).Name).join(' '), html: g => tagBadges(tags, g.TagIds)},
    {key: 'envs', label: 'Environments', value: g => members(g.Id).length,
     html: g => members(g.Id).map(ep => esc(ep.Name)).join(', ') || '<span class="muted">none</span>'},
    {key: 'actions', label: '', html: g => `<a class="button small" href="#/groups/${g.Id}">Edit</a> <a class="button small" href="#/groups/${g.Id}/access">Access</a>
      ${g.Id === UNASSIGNED_GROUP ? '' : `<button class="small danger" data-del="${g.Id}" aria-label="Remove group ${esc(g.Name)}">Remove</button>`}`}]});
  main.addEventListener('click', async e => { const b = e.target.closest('[data-del]'); if (!b) return;
    const group = groups.find(g => g.Id === +b.dataset.del);
    if (!confirm(`Remove group ${group.Name}? Its environments become unassigned.`)) return;
    try { await api('DELETE', `/api/endpoint_groups/${group.Id}`); toast(`Group ${group.Name} removed`); await pageGroups(); }
    catch (err) { $('#err').textContent = err.message; } });
  const f = $('#f');
  onSubmit(f, async data => {
    const made = await api('POST', '/api/endpoint_groups', {Name: data.get('Name'), Description: data.get('Description'),
      AssociatedEndpoints: checkedIds(f, 'ep'), TagIDs: checkedIds(f, 'tag')});
    toast(`Group ${made.Name} created`); await pageGroups();
  });
}

export async function pageGroup(id) {
  const [group, envs, tags] = await Promise.all([api('GET', `/api/endpoint_groups/${id}`), api('GET', '/api/endpoints'), api('GET', '/api/tags').catch(() => [])]);
  const inside = envs.filter(ep => ep.GroupId === group.Id), outside = envs.filter(ep => ep.GroupId !== group.Id);
  const main = render('Group', `<div class="card"><h2>Group ${esc(group.Name)}</h2><form id="f">
    <label for="group-name">Name</label><input id="group-name" name="Name" required value="${esc(group.Name)}">
    <label for="group-description">Description</label><input id="group-description" name="Description" value="${esc(group.Description)}">
    <p class="muted">Tags</p><div>${tagBoxes(tags, group.TagIds || [])}</div>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save</button> <a href="#/groups/${group.Id}/access">Who has access</a> · <a href="#/groups">All groups</a></p></form></div>
    <div class="card"><h3>Environments in this group</h3><table id="group-members"><tr><th>Environment</th><th>Status</th><th></th></tr>
    ${inside.map(ep => `<tr data-env="${ep.Id}"><td>${esc(ep.Name)}</td><td>${statusBadge(ep)}</td>
      <td>${group.Id === UNASSIGNED_GROUP ? '' : `<button class="small" data-out="${ep.Id}">Take out of the group</button>`}</td></tr>`).join('')
      || '<tr><td colspan="3" class="muted">No environment in this group.</td></tr>'}</table>
    ${outside.length ? `<form id="add" class="toolbar"><label for="group-add">Move an environment into this group</label>
      <select id="group-add" name="endpoint">${outside.map(ep => `<option value="${ep.Id}">${esc(ep.Name)}</option>`).join('')}</select>
      <button type="submit">Move into the group</button><div class="error" role="alert"></div></form>` : ''}</div>`,
    `<a href="#/groups">Groups</a> / ${esc(group.Name)}`);
  const f = $('#f');
  onSubmit(f, async data => {
    await api('PUT', `/api/endpoint_groups/${group.Id}`, {Name: data.get('Name'), Description: data.get('Description'), TagIDs: checkedIds(f, 'tag')});
    toast('Group saved'); await pageGroup(group.Id);
  });
  const add = $('#add');
  if (add) onSubmit(add, async data => {
    await api('PUT', `/api/endpoint_groups/${group.Id}/endpoints/${data.get('endpoint')}`); toast('Environment moved'); await pageGroup(group.Id);
  });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-out]'); if (!b) return;
    try { await api('DELETE', `/api/endpoint_groups/${group.Id}/endpoints/${b.dataset.out}`); toast('Environment taken out'); await pageGroup(group.Id); }
    catch (err) { toast(err.message, true); } });
}
