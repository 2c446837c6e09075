// Pages and parts of the edge feature: the edge kind of the environment wizard, edge keys and association on
// the home page, edge groups, edge jobs and edge stacks.
import {api} from '../api.js';
import {$} from '../dom.js';
import {formError, showError, toast} from '../feedback.js';
import {esc, fmtAgo} from '../format.js';
import {every} from '../lifecycle.js';
import {constants} from '../constants.js';
import {isAdmin} from '../session.js';
import {render} from '../shell.js';
import {bindGitEdgeStackCard, bindGitEdgeStacks, gitEdgeStackCard, gitEdgeStackForm} from './stack-git.js';
import {bindEditor, checkboxes, checkedIds, statusBadge} from '../widgets.js';

export async function pageEdgeStacks() {
  const [stacks, groups, eps] = await Promise.all([api('GET', '/api/edge_stacks'), api('GET', '/api/edge_groups').catch(() => []), api('GET', '/api/endpoints')]);
  const epName = id => (eps.find(e => e.Id === id) || {}).Name || id;
  render('Edge stacks', `<div class="toolbar"><h2 class="flat">Edge stacks</h2></div>
    <div class="card"><table><tr><th>Name</th><th>Environments</th><th></th></tr>
    ${stacks.map(s => `<tr><td><a href="#/edge/stacks/${s.Id}">${esc(s.Name)}</a></td><td>${Object.values(s.Status).map(st => `<span class="badge ${st.Status === constants.EdgeStackStatus.Running ? 'running' : st.Status === constants.EdgeStackStatus.Error ? 'exited' : 'paused'}" title="${esc(st.Error)}">${esc(epName(st.EndpointID))}: ${esc(st.Status)}</span> ${st.Error ? `<span class="muted">${esc(st.Error)}</span>` : ''}`).join('<br>') || '<span class="muted">no environment in its groups</span>'}</td>
      <td><button class="danger" data-del="${s.Id}">Remove</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">No edge stack yet.</td></tr>'}</table></div>
    <div class="card"><h3>New edge stack</h3><form id="f"><label for="n">Name</label><input id="n" required pattern="[a-z0-9][a-z0-9_\\-]*">
    <label for="g">Edge groups</label><select id="g" multiple>${groups.map(g => `<option value="${g.Id}">${esc(g.Name)}</option>`).join('')}</select>
    <label for="content">Compose file</label><div class="editor"><div class="gutter" id="gutter" aria-hidden="true"></div>
    <textarea id="content" rows="14" spellcheck="false">services:\n  web:\n    image: busybox:local\n    command: sleep 3600\n</textarea></div>
    <div class="error" role="alert" id="err"></div><button class="primary">Deploy to the groups</button></form></div>${gitEdgeStackForm(groups)}`);
  bindGitEdgeStacks(pageEdgeStacks);
  let badLine = 0; const redraw = bindEditor(() => badLine);
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); badLine = 0;
    try { await api('POST', '/api/edge_stacks', {Name: f.n.value, StackFileContent: f.content.value, DeploymentType: 0,
      EdgeGroups: [...f.g.selectedOptions].map(o => +o.value)}); pageEdgeStacks(); }
    catch (err) { formError(f, err); const m = /line (\d+)/.exec(err.message); badLine = m ? +m[1] : 0; redraw(); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/edge_stacks/${b.dataset.del}`); pageEdgeStacks(); });
}
// One edge stack: its compose file and edge groups, saved as a new version the edge agents deploy again.
export async function pageEdgeStack(id) {
  const [stack, file, groups] = await Promise.all([api('GET', `/api/edge_stacks/${id}`), api('GET', `/api/edge_stacks/${id}/file`),
    api('GET', '/api/edge_groups').catch(() => [])]);
  render('Edge stack', `<div class="card"><h2>Edge stack ${esc(stack.Name)}</h2><p class="muted">Version ${esc(stack.Version)} · saving deploys a new version to every environment of its groups.</p>
    <form id="f"><label for="g">Edge groups</label><select id="g" multiple>${groups.map(g => `<option value="${g.Id}" ${stack.EdgeGroups.includes(g.Id) ? 'selected' : ''}>${esc(g.Name)}</option>`).join('')}</select>
    <label for="content">Compose file</label><div class="editor"><div class="gutter" id="gutter" aria-hidden="true"></div>
    <textarea id="content" rows="18" spellcheck="false">${esc(file.StackFileContent)}</textarea></div>
    <div class="error" role="alert" id="err"></div><p><button class="primary">Save and redeploy</button> <a href="#/edge/stacks">All edge stacks</a></p></form></div>
    ${stack.GitConfig ? gitEdgeStackCard(stack) : ''}`,
    `<a href="#/edge/stacks">Edge stacks</a> / ${esc(stack.Name)}`);
  if (stack.GitConfig) bindGitEdgeStackCard(stack, () => pageEdgeStack(id));
  let badLine = 0; const redraw = bindEditor(() => badLine);
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); badLine = 0; redraw();
    try { const saved = await api('PUT', `/api/edge_stacks/${id}`, {StackFileContent: f.content.value, EdgeGroups: [...f.g.selectedOptions].map(o => +o.value), UpdateVersion: true});
      toast(`Edge stack ${saved.Name} saved: version ${saved.Version}`); await pageEdgeStack(id); }
    catch (err) { formError(f, err); const m = /line (\d+)/.exec(err.message); badLine = m ? +m[1] : 0; redraw(); } };
}
// The edge kind of the add-environment wizard.
export const EDGE_WIZARD_KIND = {label: 'Edge agent (the node dials this server)',
  fields: env => env ? `<p class="muted">The agent dials ${esc(env.URL)}; its Edge ID is ${esc(env.EdgeID || '(none yet)')}.</p>
    ${env.EdgeID ? `<p><button type="button" data-disassociate="${env.Id}">Disassociate</button> <span class="muted small">forget this Edge ID: the next agent that connects with the key is bound</span></p>` : ''}` :
    `<label for="url">This server's address as the edge node reaches it (HTTPS); empty: https://${esc(location.hostname)} on this server's HTTPS port</label>
    <input id="url" name="URL" placeholder="https://portainer.example.com:9443">`,
  done: (el, env) => { el.innerHTML = `<h3>Edge environment ${esc(env.Name)} created</h3>${edgeKeyBox(env)}
    <p>It shows as up on the <a href="#/home">home page</a> as soon as its agent connects.</p>`; bindEdgeButtons(el); }};
export function edgeInfo(ep) {
  if (ep.Type !== constants.EnvironmentTypes.Edge) return '';
  const refused = ep.EdgeRefused ? `<div class="error">Refused an agent with Edge ID <code>${esc(ep.EdgeRefused.EdgeID)}</code> from
    ${esc(ep.EdgeRefused.Address)}. ${isAdmin() ? `<button class="small" data-associate="${ep.Id}" data-edge-id="${esc(ep.EdgeRefused.EdgeID)}">Associate this agent instead</button>` : ''}</div>` : '';
  const waiting = ep.UserTrusted === false ? `<span class="badge paused">waiting for approval</span>
    ${isAdmin() ? '<a href="#/edge/devices?trust=waiting">waiting room</a> · ' : ''}` : '';
  return `<div class="muted small">${waiting}Edge ID <code>${esc(ep.EdgeID || '(none yet)')}</code> · tunnel ${ep.EdgeTunnelConnected ? (ep.EdgeTunnelRelayed ? 'connected to another server (relayed through it)' : 'connected') : 'disconnected'} ·
    last seen ${ep.LastCheckInDate ? fmtAgo(ep.LastCheckInDate) : 'never'}
    ${isAdmin() ? `<button type="button" class="small" data-edge-key="${ep.Id}">Show edge key</button>` : ''}
    ${isAdmin() && ep.EdgeID ? `<button type="button" class="small" data-disassociate="${ep.Id}" title="Forget this Edge ID: the next edge agent that connects with the key is bound instead">Disassociate</button>` : ''}</div>${refused}<div id="edge-key-${ep.Id}"></div>`;
}
function edgeKeyBox(answer) {
  return `<p>Run this on the edge node, next to a copy of agent.py (Python 3 with aiohttp):</p>
    <pre class="copyable mono" id="edge-command">${esc(answer.EdgeAgentCommand)}</pre>
    <p><button type="button" data-copy="edge-command">Copy command</button></p>
    <p class="muted">The edge key alone:</p><pre class="copyable mono" id="edge-key-raw">${esc(answer.EdgeKey)}</pre>
    <p><button type="button" data-copy="edge-key-raw">Copy key</button></p>`;
}
// One listener per container, so cards drawn again every few seconds keep working buttons.
export function bindEdgeButtons(container, redraw) {
  container.addEventListener('click', async e => {
    const b = e.target.closest('[data-copy], [data-edge-key], [data-associate], [data-disassociate]');
    if (!b) return;
    if (b.dataset.copy) {
      const text = $(`#${b.dataset.copy}`).textContent;
      try { await navigator.clipboard.writeText(text); b.textContent = 'Copied'; }
      catch (err) { const range = document.createRange(); range.selectNodeContents($(`#${b.dataset.copy}`));
        getSelection().removeAllRanges(); getSelection().addRange(range); b.textContent = 'Selected: press Ctrl+C'; }
    } else if (b.dataset.edgeKey) {
      $(`#edge-key-${b.dataset.edgeKey}`).innerHTML = edgeKeyBox(await api('GET', `/api/endpoints/${b.dataset.edgeKey}/edge/key`));
    } else if (b.dataset.disassociate) {
      if (!confirm('Disassociate this environment from its edge agent? Its tunnel closes; the next agent that connects with the edge key is bound.')) return;
      try { await api('DELETE', `/api/endpoints/${b.dataset.disassociate}/association`); toast('Environment disassociated from its edge agent'); }
      catch (err) { toast(err.message, true); return; }
      if (redraw) await redraw();
    } else {
      await api('PUT', `/api/endpoints/${b.dataset.associate}/association`, {EdgeID: b.dataset.edgeId});
      toast(`Environment associated with Edge ID ${b.dataset.edgeId}`); if (redraw) await redraw();
    }
  });
}
export async function pageEdgeGroups() {
  const [groups, eps] = await Promise.all([api('GET', '/api/edge_groups'), api('GET', `/api/endpoints?types=${constants.EnvironmentTypes.Edge}`)]);
  const byId = Object.fromEntries(eps.map(ep => [ep.Id, ep]));
  const main = render('Edge groups', `<div class="card"><h2>Edge groups</h2><table><tr><th>Name</th><th>Kind</th><th>Environments</th><th></th></tr>
    ${groups.map(g => `<tr><td>${esc(g.Name)}</td><td>${g.Dynamic ? `tags ${esc(g.TagIds.join(', '))} (${g.PartialMatch ? 'any' : 'all'})` : 'static'}</td>
    <td>${g.TrustedEndpoints.map(id => `${esc((byId[id] || {}).Name || id)} ${statusBadge(byId[id])}`).join(', ') || '<span class="muted">none</span>'}</td>
    <td><button class="danger small" data-del="${g.Id}">Remove</button></td></tr>`).join('') || '<tr><td colspan="4" class="muted">No edge group yet.</td></tr>'}</table>
    <div class="error" role="alert" id="err"></div></div>
    <div class="card"><h3>Add edge group</h3><form id="f"><label for="n">Name</label><input id="n" required>
    <label for="k">Kind</label><select id="k"><option value="static">Static: the environments ticked below</option>
    <option value="dynamic">Dynamic: every edge environment carrying tags</option></select>
    <div id="static"><p>Edge environments</p>${checkboxes(eps, 'ep')}</div>
    <div id="dynamic" class="hidden"><label for="t">Tag ids (comma separated)</label><input id="t">
    <label class="check"><input type="checkbox" id="pm"> Any of the tags is enough (else all)</label></div>
    <div class="error" role="alert"></div><p><button class="primary">Create edge group</button></p></form></div>`);
  const f = $('#f');
  f.k.addEventListener('change', () => { $('#static').classList.toggle('hidden', f.k.value !== 'static'); $('#dynamic').classList.toggle('hidden', f.k.value === 'static'); });
  f.addEventListener('submit', async e => { e.preventDefault(); const dynamic = f.k.value === 'dynamic';
    const body = {Name: f.n.value, Dynamic: dynamic, Endpoints: dynamic ? [] : checkedIds(f, 'ep'),
      TagIds: dynamic ? f.t.value.split(',').map(x => x.trim()).filter(Boolean).map(Number) : [], PartialMatch: f.pm.checked};
    try { await api('POST', '/api/edge_groups', body); toast('Edge group created'); await pageEdgeGroups(); } catch (err) { showError(f, err); } });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-del]'); if (!b) return;
    try { await api('DELETE', `/api/edge_groups/${b.dataset.del}`); await pageEdgeGroups(); } catch (err) { $('#err').textContent = err.message; } });
}
export async function pageEdgeJobs() {
  const [jobs, groups, eps] = await Promise.all([api('GET', '/api/edge_jobs'), api('GET', '/api/edge_groups'), api('GET', `/api/endpoints?types=${constants.EnvironmentTypes.Edge}`)]);
  const main = render('Edge jobs', `<div class="card"><h2>Edge jobs</h2><table><tr><th>Name</th><th>Schedule</th><th>Hosts</th><th></th></tr>
    ${jobs.map(j => `<tr><td><a href="#/edge/jobs/${j.Id}">${esc(j.Name)}</a></td><td>${j.Recurring ? esc(j.CronExpression) : 'once'}</td>
    <td>${Object.keys(j.Endpoints).length}</td><td><button class="small" data-run="${j.Id}">Run now</button> <button class="danger small" data-del="${j.Id}">Remove</button></td></tr>`).join('')
    || '<tr><td colspan="4" class="muted">No edge job yet.</td></tr>'}</table></div>
    <div class="card"><h3>Add edge job</h3><form id="f"><label for="n">Name</label><input id="n" required>
    <label for="s">Script (sh)</label><textarea id="s" rows="6" required></textarea>
    <p>Edge groups</p>${checkboxes(groups, 'g')}<p>Edge environments</p>${checkboxes(eps, 'ep')}
    <label class="check"><input type="checkbox" id="r"> Recurring</label>
    <label for="c">Cron schedule (minute hour day month weekday)</label><input id="c" placeholder="*/15 * * * *">
    <label for="m">Run</label><select id="m"><option value="container">in a container</option><option value="host">on the host (its files, processes and network)</option></select>
    <label for="i">Image (empty: the server's default)</label><input id="i">
    <div class="error" role="alert"></div><p><button class="primary">Create edge job</button></p></form></div>`);
  const f = $('#f');
  f.addEventListener('submit', async e => { e.preventDefault();
    const body = {Name: f.n.value, FileContent: f.s.value, EdgeGroups: checkedIds(f, 'g'), Endpoints: checkedIds(f, 'ep'),
      Recurring: f.r.checked, CronExpression: f.c.value, Mode: f.m.value, Image: f.i.value};
    try { const job = await api('POST', '/api/edge_jobs/create/string', body); location.hash = `#/edge/jobs/${job.Id}`; } catch (err) { showError(f, err); } });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-run], [data-del]'); if (!b) return;
    if (b.dataset.run) { await api('POST', `/api/edge_jobs/${b.dataset.run}/run`); location.hash = `#/edge/jobs/${b.dataset.run}`; }
    else { await api('DELETE', `/api/edge_jobs/${b.dataset.del}`); await pageEdgeJobs(); } });
}
export async function pageEdgeJob(id) {
  const job = await api('GET', `/api/edge_jobs/${id}`);
  const state = constants.EdgeJobLogStateNames;
  const main = render('Edge job', `<div class="card"><h2>Edge job ${esc(job.Name)}</h2><p class="muted">${job.Recurring ? 'Runs on ' + esc(job.CronExpression) : 'Runs once'}
    · <button id="run" class="small">Run now</button></p><div id="tasks"></div><pre id="out" class="mono"></pre></div>`,
    `<a href="#/edge/jobs">Edge jobs</a> / ${esc(job.Name)}`);
  const draw = async () => {
    const tasks = await api('GET', `/api/edge_jobs/${id}/tasks`);
    $('#tasks').innerHTML = `<table><tr><th>Environment</th><th>Tunnel</th><th>State</th><th>Exit code</th><th>Last run</th><th></th></tr>
    ${tasks.map(t => `<tr><td>${esc(t.EndpointName)}</td><td><span class="badge ${t.Connected ? 'up' : 'down'}">${t.Connected ? 'connected' : 'disconnected'}</span></td>
    <td>${state[t.LogsStatus]}</td><td>${t.LastRun ? esc(t.LastRun.ExitCode) : ''}${t.LastRun && t.LastRun.Error ? ' ' + esc(t.LastRun.Error) : ''}</td>
    <td>${t.LastRun ? fmtAgo(t.LastRun.Time) : ''}</td>
    <td>${t.LastRun ? `<button class="small" data-logs="${t.EndpointId}">Output</button>` : ''}</td></tr>`).join('')}</table>`;
  };
  $('#run').addEventListener('click', async () => { await api('POST', `/api/edge_jobs/${id}/run`); await draw(); });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-logs]'); if (!b) return;
    const logs = await api('GET', `/api/edge_jobs/${id}/tasks/${b.dataset.logs}/logs`);
    $('#out').textContent = logs.FileContent || '(no output)'; });
  await draw(); every(3000, draw);
}
