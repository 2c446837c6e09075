// Page: one Swarm node: its description, availability (active, pause, drain), labels, promote and demote (for
// those the proxy lets change a node: administrators and the environment's administrators; others see no control),
// and the tasks it runs.
import {api} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc, fmtAgo, fmtBytes, fmtDate, shortId} from '../format.js';
import {taskName} from '../service-spec.js';
import {isAuthorized} from '../session.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';
import {jsonTree, pairsEditor} from '../widgets.js';

const AVAILABILITIES = {active: 'active: takes new tasks', pause: 'pause: keeps its tasks, takes no new one', drain: 'drain: its tasks move to other nodes'};
export async function pageNode(envId, nodeId) {
  const base = dockerBase(envId);
  let node = await api('GET', `${base}/nodes/${encodeURIComponent(nodeId)}`);
  const id = node.ID, host = node.Description.Hostname, mayChange = isAuthorized(envId, 'DockerNodeUpdate');
  const scheduling = mayChange ? `<form id="node-form" novalidate><h3>Scheduling</h3>
      <label for="node-avail">Availability</label><select id="node-avail" name="availability">${Object.entries(AVAILABILITIES).map(([v, l]) => `<option value="${v}">${esc(l)}</option>`).join('')}</select>
      <fieldset><legend>Labels (placement constraints read them as node.labels.NAME)</legend><div id="node-labels"></div></fieldset>
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Save</button></p></form>`
    : `<h3>Scheduling</h3><dl class="kv" id="node-scheduling"></dl>
      <p class="muted">Only administrators of this environment change a node; you see it as it is.</p>`;
  render(host, `<div class="toolbar"><h2>${esc(host)}</h2><span class="badge" id="node-role"></span><span class="badge" id="node-availability"></span>
    <span class="spacer"></span>${mayChange ? '<button id="node-promote">Promote to manager</button><button id="node-demote">Demote to worker</button>' : ''}</div>
    <div class="error" role="alert" id="node-error"></div>
    <div class="grid2"><div class="card"><h3>Node</h3><dl class="kv" id="node-facts"></dl></div>
    <div class="card">${scheduling}</div></div>
    <h3>Tasks on this node</h3><div id="node-tasks"></div>
    <details class="card tree"><summary>Inspect</summary><ul id="node-inspect"></ul></details>`,
  envCrumbs(envId, `<a href="#/env/${envId}/nodes">Nodes</a>`, esc(host)));
  let getLabels = null;
  const show = () => {
    const d = node.Description, leader = node.ManagerStatus && node.ManagerStatus.Leader;
    $('#node-role').textContent = node.Spec.Role + (leader ? ' (leader)' : '');
    $('#node-availability').textContent = node.Spec.Availability;
    $('#node-facts').innerHTML = `<dt>ID</dt><dd class="mono">${esc(id)}</dd><dt>Status</dt><dd><span class="${node.Status.State === 'ready' ? 'up' : 'down'}">${esc(node.Status.State)}</span> ${esc(node.Status.Message || '')}</dd>
      <dt>Address</dt><dd>${esc(node.Status.Addr)}${node.ManagerStatus ? ` · manager at ${esc(node.ManagerStatus.Addr)}` : ''}</dd>
      <dt>Engine</dt><dd>${esc(d.Engine.EngineVersion)}</dd><dt>Platform</dt><dd>${esc(d.Platform.OS)} ${esc(d.Platform.Architecture)}</dd>
      <dt>Resources</dt><dd>${(d.Resources.NanoCPUs / 1e9).toFixed(1)} CPUs · ${esc(fmtBytes(d.Resources.MemoryBytes))}</dd>
      <dt>Engine labels</dt><dd class="mono">${esc(Object.entries(d.Engine.Labels || {}).map(([k, v]) => `${k}=${v}`).join('\n')) || '<span class="muted">none</span>'}</dd>
      <dt>Updated</dt><dd>${fmtDate(node.UpdatedAt)}</dd>`;
    $('#node-inspect').innerHTML = jsonTree(node);
    const labels = Object.entries(node.Spec.Labels || {});
    if (!mayChange) {
      $('#node-scheduling').innerHTML = `<dt>Availability</dt><dd>${esc(AVAILABILITIES[node.Spec.Availability] || node.Spec.Availability)}</dd>
        <dt>Labels</dt><dd class="mono">${esc(labels.map(([k, v]) => `${k}=${v}`).join('\n')) || '<span class="muted">none</span>'}</dd>`;
      return;
    }
    $('#node-avail').value = node.Spec.Availability;
    const holder = $('#node-labels'), fresh = holder.cloneNode(false); holder.replaceWith(fresh); // a new editor, no old listener
    getLabels = pairsEditor(fresh, [{placeholder: 'label name'}, {placeholder: 'value'}], labels, 'Add label');
    $('#node-promote').classList.toggle('hidden', node.Spec.Role === 'manager'); $('#node-demote').classList.toggle('hidden', node.Spec.Role !== 'manager');
  };
  show();
  // The node's spec as the engine holds it now, at its version, with the change applied.
  const change = async edit => {
    const now = await api('GET', `${base}/nodes/${id}`);
    await api('POST', `${base}/nodes/${id}/update?version=${now.Version.Index}`, edit({...now.Spec}));
    node = await api('GET', `${base}/nodes/${id}`); show(); await refreshTasks();
  };
  if (mayChange) onSubmit($('#node-form'), async data => {
    await change(spec => ({...spec, Availability: data.get('availability'), Labels: Object.fromEntries(getLabels())}));
    toast(`${host}: ${node.Spec.Availability}, ${Object.keys(node.Spec.Labels || {}).length} label(s)`);
  });
  for (const [button, role] of mayChange ? [['#node-promote', 'manager'], ['#node-demote', 'worker']] : []) {
    $(button).addEventListener('click', async () => {
      $('#node-error').textContent = '';
      try { await change(spec => ({...spec, Role: role})); toast(`${host} is now a ${role}`); }
      catch (err) { if (err.name !== 'AbortError') $('#node-error').textContent = err.message; }
    });
  }
  let serviceNames = new Map();
  const table = dataTable($('#node-tasks'), {id: t => t.ID, filterPlaceholder: 'Filter tasks', empty: 'No task on this node.', sortKey: 'since',
    columns: [
      {key: 'name', label: 'Task', value: t => taskName(serviceNames.get(t.ServiceID) || shortId(t.ServiceID), t),
        html: t => `<a href="#/env/${envId}/services/${esc(t.ServiceID)}">${esc(taskName(serviceNames.get(t.ServiceID) || shortId(t.ServiceID), t))}</a>`},
      {key: 'state', label: 'State', value: t => t.Status.State, html: t => `<span class="${esc(t.Status.State)}">${esc(t.Status.State)}</span>`},
      {key: 'desired', label: 'Desired state', value: t => t.DesiredState},
      {key: 'error', label: 'Error', value: t => t.Status.Err || '', cls: 'small hide-sm'},
      {key: 'since', label: 'Since', value: t => -Date.parse(t.Status.Timestamp), html: t => fmtAgo(t.Status.Timestamp)},
    ]});
  const refreshTasks = async () => {
    const filters = encodeURIComponent(JSON.stringify({node: [id]}));
    const [tasks, services] = await Promise.all([api('GET', `${base}/tasks?filters=${filters}`), api('GET', `${base}/services`)]);
    serviceNames = new Map(services.map(s => [s.ID, s.Spec.Name])); table.setRows(tasks);
  };
  await refreshTasks();
  watchEngine(envId, ['node', 'service'], refreshTasks, 3000);
}
