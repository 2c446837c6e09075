// Edge fleets: the devices page (server-side filters and paging over thousands of edge environments, the waiting
// room, bulk approve / reject / tag / move / remove), the edge settings page (the fleet's onboarding key,
// auto-approval rules, refused devices) and agent updates (schedules and each device's state).
import {api, request} from '../api.js';
import {$, $$} from '../dom.js';
import {showError, toast} from '../feedback.js';
import {FLEET_PAGE_SIZE, LAST_SEEN, fleetQuery, pageSpan} from '../fleet-query.js';
import {esc, fmtAgo} from '../format.js';
import {every} from '../lifecycle.js';
import {render} from '../shell.js';
import {statusBadge} from '../widgets.js';

const options = (items, value, label, chosen) => items.map(i => `<option value="${esc(value(i))}" ${String(value(i)) === String(chosen) ? 'selected' : ''}>${esc(label(i))}</option>`).join('');

function deviceRow(ep, tagName, groupName, picked) {
  return `<tr data-id="${ep.Id}"><td class="check"><input type="checkbox" class="pick" value="${ep.Id}" ${picked.has(ep.Id) ? 'checked' : ''} aria-label="Select ${esc(ep.Name)}"></td>
    <td><a href="#/env/${ep.Id}/dashboard">${esc(ep.Name)}</a></td><td class="mono small">${esc(ep.EdgeID || '')}</td>
    <td>${statusBadge(ep)}</td><td>${ep.UserTrusted ? '<span class="badge up">trusted</span>' : '<span class="badge paused">waiting</span>'}</td>
    <td>${(ep.TagIds || []).map(t => `<span class="badge">${esc(tagName(t))}</span>`).join('')}</td><td>${esc(groupName(ep.GroupId))}</td>
    <td class="mono small">${esc((ep.Agent || {}).Version || '')}</td><td>${ep.EdgeTunnelConnected ? 'now' : ep.LastCheckInDate ? fmtAgo(ep.LastCheckInDate) : 'never'}</td></tr>`;
}
// Every edge device, one page at a time from the server: the filters are the query of GET /api/endpoints.
export async function pageEdgeDevices() {
  const given = Object.fromEntries(new URLSearchParams(location.hash.split('?')[1] || ''));
  const [tags, groups, edgeGroups] = await Promise.all([api('GET', '/api/tags').catch(() => []),
    api('GET', '/api/endpoint_groups').catch(() => []), api('GET', '/api/edge_groups').catch(() => [])]);
  const tagName = id => (tags.find(t => t.ID === id) || {}).Name || `tag ${id}`;
  const groupName = id => (groups.find(g => g.Id === (id || 1)) || {}).Name || `group ${id}`;
  render('Edge devices', `<div class="toolbar"><h2>Edge devices</h2><span class="spacer"></span><a class="button" href="#/edge/settings">Edge settings</a></div>
    <form id="filters" class="card toolbar" aria-label="Filters">
      <input class="filter" name="search" type="search" placeholder="Name or URL" aria-label="Search" value="${esc(given.search || '')}">
      <select name="trust" aria-label="Trust"><option value="">trusted and waiting</option>${options([['waiting', 'waiting room'], ['trusted', 'trusted']], i => i[0], i => i[1], given.trust)}</select>
      <select name="status" aria-label="Status"><option value="">any status</option>${options([['1', 'up'], ['2', 'down']], i => i[0], i => i[1], given.status)}</select>
      <select name="tag" aria-label="Tag"><option value="">any tag</option>${options(tags, t => t.ID, t => t.Name, given.tag)}</select>
      <select name="group" aria-label="Group"><option value="">any group</option>${options(groups, g => g.Id, g => g.Name, given.group)}</select>
      <select name="edgeGroup" aria-label="Edge group"><option value="">any edge group</option>${options(edgeGroups, g => g.Id, g => g.Name, given.edgeGroup)}</select>
      <input name="version" placeholder="agent version" aria-label="Agent version" value="${esc(given.version || '')}">
      <select name="lastSeen" aria-label="Last seen">${options(LAST_SEEN, i => i[0], i => 'seen ' + i[1], given.lastSeen || '')}</select>
    </form>
    <div class="card"><div class="toolbar" id="bulk"><span id="picked" class="muted small">none selected</span>
      <button data-act="approve" class="primary">Approve</button><button data-act="reject" class="danger">Reject</button>
      <select id="bulk-tag" aria-label="Tag to add">${options(tags, t => t.ID, t => t.Name)}</select><button data-act="tag">Add tag</button>
      <select id="bulk-group" aria-label="Group to move to">${options(groups, g => g.Id, g => g.Name)}</select><button data-act="move">Move to group</button>
      <button data-act="remove" class="danger">Remove</button></div>
      <div class="error" role="alert" id="fleet-err"></div>
      <div class="table-wrap"><table><thead><tr><th class="check"><input type="checkbox" id="pick-page" aria-label="Select this page"></th><th>Name</th><th>Edge ID</th><th>Status</th><th>Trust</th><th>Tags</th><th>Group</th><th>Agent</th><th>Last seen</th></tr></thead>
      <tbody id="devices"></tbody></table></div>
      <div class="toolbar"><button id="prev">Previous</button><span id="span" class="muted"></span><button id="next">Next</button></div></div>`);
  const form = $('#filters'), picked = new Set();
  let start = Number(given.start || 0), rows = [], total = 0;
  const filters = () => Object.fromEntries([...new FormData(form)].filter(([, v]) => v));
  const showPicked = () => { $('#picked').textContent = picked.size ? `${picked.size} selected` : 'none selected'; };
  const load = async () => {
    const r = await request('GET', `/api/endpoints?${fleetQuery(filters(), start)}`);
    rows = await r.json(); total = Number(r.headers.get('X-Total-Count') || rows.length);
    // Past the end (devices approved, rejected or gone since): the last page that has some.
    if (!rows.length && start > 0 && total > 0) { start = Math.floor((total - 1) / FLEET_PAGE_SIZE) * FLEET_PAGE_SIZE; return load(); }
    $('#devices').innerHTML = rows.map(ep => deviceRow(ep, tagName, groupName, picked)).join('') || '<tr><td colspan="9" class="empty">No edge device matches.</td></tr>';
    const span = pageSpan(start, rows.length, total);
    $('#span').textContent = span.text; $('#prev').disabled = !span.previous; $('#next').disabled = !span.next;
    $('#pick-page').checked = rows.length > 0 && rows.every(ep => picked.has(ep.Id));
  };
  const refilter = () => { start = 0; history.replaceState(null, '', `#/edge/devices?${new URLSearchParams(filters())}`); load(); };
  let timer = 0;
  form.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(refilter, 250); });
  form.addEventListener('submit', e => { e.preventDefault(); refilter(); });
  $('#prev').addEventListener('click', () => { start = Math.max(0, start - FLEET_PAGE_SIZE); load(); });
  $('#next').addEventListener('click', () => { start += FLEET_PAGE_SIZE; load(); });
  $('#devices').addEventListener('change', e => { if (!e.target.classList.contains('pick')) return;
    e.target.checked ? picked.add(+e.target.value) : picked.delete(+e.target.value); showPicked(); });
  $('#pick-page').addEventListener('change', e => { for (const ep of rows) e.target.checked ? picked.add(ep.Id) : picked.delete(ep.Id);
    $$('.pick', $('#devices')).forEach(b => { b.checked = e.target.checked; }); showPicked(); });
  $('#bulk').addEventListener('click', async e => {
    const b = e.target.closest('[data-act]'); if (!b) return;
    const action = b.dataset.act, ids = [...picked];
    if (!ids.length) { $('#fleet-err').textContent = 'Select devices first.'; return; }
    if ((action === 'remove' || action === 'reject') && !confirm(`${action === 'reject' ? 'Reject' : 'Remove'} ${ids.length} device(s)? They are refused until you admit them again on the edge settings page.`)) return;
    const body = {Action: action, EndpointIds: ids};
    if (action === 'tag') body.TagIds = [+$('#bulk-tag').value];
    if (action === 'move') body.GroupId = +$('#bulk-group').value;
    $('#fleet-err').textContent = '';
    try { await api('POST', '/api/endpoints/bulk', body); toast(`${action}: ${ids.length} device(s)`);
      if (action === 'remove' || action === 'reject') picked.clear(); showPicked(); await load(); }
    catch (err) { $('#fleet-err').textContent = err.message; }
  });
  await load(); every(10000, load);
}

function ruleRow(rule) {
  return `<li>${esc({tag: 'announces tag', group: 'announces edge group', edgeid: 'Edge ID matches'}[rule.Kind] || rule.Kind)} <code>${esc(rule.Value)}</code>
    <button type="button" class="small danger" data-drop-rule="${esc(rule.Kind)}:${esc(rule.Value)}">Remove</button></li>`;
}
// The edge settings page: the fleet's onboarding key (shown, copied, rotated), auto-approval rules, refused devices.
export async function pageEdgeSettings() {
  const [key, approval, refused] = await Promise.all([api('GET', '/api/edge/onboarding'), api('GET', '/api/edge/auto_approval'),
    api('GET', '/api/edge/refused_devices')]);
  let rules = approval.Rules;
  const main = render('Edge settings', `<div class="card"><h2>Onboarding key</h2>
    <p>Image every device with this one key: each makes its own environment when it first connects and waits in the
    <a href="#/edge/devices?trust=waiting">waiting room</a> until you approve it (or a rule below does).</p>
    <pre class="copyable mono" id="fleet-command">${esc(key.EdgeAgentCommand)}</pre><p><button type="button" data-copy="fleet-command">Copy command</button></p>
    <p class="muted">The key alone:</p><pre class="copyable mono" id="fleet-key">${esc(key.EdgeKey)}</pre>
    <p><button type="button" data-copy="fleet-key">Copy key</button> <button type="button" class="danger" id="rotate">Rotate key</button>
    <span class="muted small">${key.KeyCreated ? `made ${fmtAgo(key.KeyCreated)}` : ''} · rotating refuses the old key to new devices; devices already onboarded keep working</span></p>
    <form id="url-form"><label for="url">Address devices dial (HTTPS); empty: the address you reached this server by</label>
    <input id="url" name="URL" value="${esc(key.URL)}" placeholder="https://portainer.example.com:9443"><div class="error" role="alert"></div><button>Save address</button></form></div>
    <div class="card"><h3>Auto-approval</h3><p class="muted">A device is trusted at once when what it announces matches one of these.</p>
    <ul id="rules"></ul><form id="rule-form" class="toolbar"><select name="Kind" aria-label="Rule kind"><option value="tag">announces tag</option>
    <option value="group">announces edge group</option><option value="edgeid">Edge ID matches (pattern, e.g. kiosk-*)</option></select>
    <input name="Value" required aria-label="Rule value" placeholder="kiosk"><button>Add rule</button><div class="error" role="alert"></div></form></div>
    <div class="card"><h3>Refused devices</h3><p class="muted">Rejected or removed devices; each is refused until you admit it again.</p>
    <table><tr><th>Edge ID</th><th>Name</th><th>Why</th><th>When</th><th></th></tr>${refused.map(d => `<tr><td class="mono">${esc(d.EdgeID)}</td><td>${esc(d.Name)}</td>
    <td>${esc(d.Reason)}</td><td>${fmtAgo(d.Time)}</td><td><button class="small" data-admit="${esc(d.EdgeID)}">Admit again</button></td></tr>`).join('')
    || '<tr><td colspan="5" class="muted">No refused device.</td></tr>'}</table></div>`);
  const drawRules = () => { $('#rules').innerHTML = rules.map(ruleRow).join('') || '<li class="muted">No rule: every new device waits for approval.</li>'; };
  const saveRules = async (next, form) => { try { rules = (await api('PUT', '/api/edge/auto_approval', {Rules: next})).Rules; drawRules(); }
    catch (err) { if (form) showError(form, err); else toast(err.message, true); } };
  drawRules();
  $('#rule-form').addEventListener('submit', async e => { e.preventDefault(); const f = e.target;
    await saveRules([...rules, {Kind: f.Kind.value, Value: f.Value.value}], f); f.Value.value = ''; });
  $('#url-form').addEventListener('submit', async e => { e.preventDefault();
    try { await api('PUT', '/api/edge/onboarding', {URL: e.target.URL.value}); toast('Address saved'); await pageEdgeSettings(); } catch (err) { showError(e.target, err); } });
  $('#rotate').addEventListener('click', async () => {
    if (!confirm('Rotate the onboarding key? New devices imaged with the old key are refused.')) return;
    await api('POST', '/api/edge/onboarding/rotate'); toast('Onboarding key rotated'); await pageEdgeSettings(); });
  main.addEventListener('click', async e => {
    const b = e.target.closest('[data-copy], [data-drop-rule], [data-admit]'); if (!b) return;
    if (b.dataset.copy) { try { await navigator.clipboard.writeText($(`#${b.dataset.copy}`).textContent); b.textContent = 'Copied'; } catch (err) { b.textContent = 'Select and press Ctrl+C'; } }
    else if (b.dataset.dropRule) { await saveRules(rules.filter(r => `${r.Kind}:${r.Value}` !== b.dataset.dropRule)); }
    else { await api('POST', `/api/edge/refused_devices/${encodeURIComponent(b.dataset.admit)}/admit`); toast(`${b.dataset.admit} admitted: it is trusted when it connects`); await pageEdgeSettings(); }
  });
}

const UPDATE_BADGE = {pending: 'paused', updating: 'paused', updated: 'up', 'rolled back': 'down', failed: 'down'};
function scheduleCard(s, groupNames) {
  const devices = Object.entries(s.devices);
  return `<div class="card" data-schedule="${s.id}"><h3>${esc(s.name)} <span class="muted small">agent ${esc(s.version)} · ${esc(groupNames(s.groupIds))}
    · ${s.batchSize} at a time · rollback after ${s.rollbackTimeout} s · ${s.scheduledTime > Date.now() / 1000 ? `starts ${new Date(s.scheduledTime * 1000).toLocaleString()}` : s.finished ? 'finished' : 'running'}</span></h3>
    <p>${Object.entries(s.counts).map(([k, n]) => `<span class="badge ${UPDATE_BADGE[k] || ''}">${esc(k)}: ${n}</span>`).join(' ') || '<span class="muted">no device yet</span>'}
    <button class="small danger" data-cancel="${s.id}">${s.finished ? 'Remove' : 'Cancel'}</button></p>
    ${devices.length ? `<table><tr><th>Device</th><th>State</th><th>Why</th><th>Since</th></tr>${devices.map(([id, d]) => `<tr><td><a href="#/env/${esc(id)}/dashboard">${esc(d.name || `environment ${id}`)}</a></td>
      <td><span class="badge ${UPDATE_BADGE[d.status] || ''}">${esc(d.status)}</span></td><td>${esc(d.reason)}</td><td>${fmtAgo(d.time)}</td></tr>`).join('')}</table>` : ''}</div>`;
}
// Agent updates: the agent.py this server offers, scheduled for edge groups; each device's state as it goes.
export async function pageEdgeUpdates() {
  const [versions, groups] = await Promise.all([api('GET', '/api/edge_update_schedules/agent_versions'), api('GET', '/api/edge_groups')]);
  const groupNames = ids => ids.map(id => (groups.find(g => g.Id === id) || {}).Name || `group ${id}`).join(', ');
  render('Agent updates', `<div class="card"><h2>Agent updates</h2><p>This server offers agent.py version <code>${esc(versions[0] || '(none declared)')}</code>.
    Each device fetches it through its tunnel, checks the signed digest, restarts as the new agent, and goes back to its old file when the new one does not reconnect in time.</p>
    <form id="update-form"><label for="u-name">Name</label><input id="u-name" name="name" required>
    <label for="u-groups">Edge groups</label><select id="u-groups" name="groupIds" multiple required>${options(groups, g => g.Id, g => g.Name)}</select>
    <label for="u-when">Start (empty: now)</label><input id="u-when" name="scheduledTime" type="datetime-local">
    <label for="u-batch">Devices at a time</label><input id="u-batch" name="batchSize" type="number" min="1" max="1000" value="10">
    <label for="u-timeout">Seconds a new agent has to reconnect before it is rolled back</label><input id="u-timeout" name="rollbackTimeout" type="number" min="5" max="3600" value="60">
    <div class="error" role="alert"></div><p><button class="primary">Schedule the update</button></p></form></div><div id="schedules"></div>`);
  const draw = async () => {
    const schedules = await api('GET', '/api/edge_update_schedules');
    $('#schedules').innerHTML = schedules.reverse().map(s => scheduleCard(s, groupNames)).join('') || '<p class="empty">No update scheduled yet.</p>';
  };
  $('#update-form').addEventListener('submit', async e => { e.preventDefault(); const f = e.target;
    const when = f.scheduledTime.value ? Math.floor(new Date(f.scheduledTime.value).getTime() / 1000) : 0;
    try { await api('POST', '/api/edge_update_schedules', {name: f.name.value, groupIds: [...f.groupIds.selectedOptions].map(o => +o.value),
      scheduledTime: when, batchSize: +f.batchSize.value, rollbackTimeout: +f.rollbackTimeout.value});
    toast('Update scheduled'); f.name.value = ''; await draw(); } catch (err) { showError(f, err); } });
  $('#schedules').addEventListener('click', async e => { const b = e.target.closest('[data-cancel]'); if (!b) return;
    await api('DELETE', `/api/edge_update_schedules/${b.dataset.cancel}`); await draw(); });
  await draw(); every(3000, draw);
}
