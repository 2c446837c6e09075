// Pages: a Swarm service created from a form, and one service's page: scale, new image with the rollout shown
// per task, rollback, force update, remove; its tasks, its logs (merged across tasks, live) and its spec.
import {api, apiStream} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {download, onSubmit, showError, toast} from '../feedback.js';
import {esc, fmtAgo, fmtDate, shortId} from '../format.js';
import {onLeave} from '../lifecycle.js';
import {forcedSpec, parseServiceLogLine, rolloutProgress, scaledSpec, serviceSpec, tagColour, taskName, withImage} from '../service-spec.js';
import {envCrumbs, render} from '../shell.js';
import {dockerStreamDecoder} from '../streams.js';
import {dataTable} from '../table.js';
import {jsonTree, pairsEditor} from '../widgets.js';

const servicesCrumb = envId => `<a href="#/env/${envId}/services">Services</a>`;
const option = (value, label = value, selected = false) => `<option value="${esc(value)}" ${selected ? 'selected' : ''}>${esc(label)}</option>`;
const input = (id, name, label, placeholder = '', type = 'text') =>
  `<div><label for="${id}">${esc(label)}</label><input id="${id}" name="${name}" type="${type}" placeholder="${esc(placeholder)}"></div>`;
// The fields of an update or a rollback policy: the same on both.
function policyFields(prefix, title) {
  return `<details class="svc-section"><summary>${esc(title)}</summary><div class="row">
    ${input(`s-${prefix}-parallelism`, `${prefix}Parallelism`, 'Parallelism (tasks at a time)', '1', 'number')}
    ${input(`s-${prefix}-delay`, `${prefix}Delay`, 'Delay between batches', 'e.g. 5s')}
    ${input(`s-${prefix}-monitor`, `${prefix}Monitor`, 'Monitor each task for', 'e.g. 5s')}
    ${input(`s-${prefix}-ratio`, `${prefix}MaxFailureRatio`, 'Failures tolerated (0 to 1)', '0')}
    <div><label for="s-${prefix}-action">On failure</label><select id="s-${prefix}-action" name="${prefix}FailureAction">${option('', 'engine default')}
      ${(prefix === 'update' ? ['pause', 'continue', 'rollback'] : ['pause', 'continue']).map(a => option(a)).join('')}</select></div>
    <div><label for="s-${prefix}-order">Order</label><select id="s-${prefix}-order" name="${prefix}Order">${option('', 'engine default')}${option('stop-first')}${option('start-first')}</select></div>
  </div></details>`;
}
const policyOf = (data, prefix) => ({parallelism: data.get(`${prefix}Parallelism`), delay: data.get(`${prefix}Delay`), monitor: data.get(`${prefix}Monitor`),
  maxFailureRatio: data.get(`${prefix}MaxFailureRatio`), failureAction: data.get(`${prefix}FailureAction`), order: data.get(`${prefix}Order`)});

export async function pageServiceCreate(envId) {
  const base = dockerBase(envId);
  const [networks, configs, secrets] = await Promise.all([api('GET', `${base}/networks`),
    api('GET', `${base}/configs`).catch(() => []), api('GET', `${base}/secrets`).catch(() => [])]);
  const swarmNetworks = networks.filter(n => n.Scope === 'swarm' && !n.Ingress && n.Name !== 'ingress');
  render('Create service', `<div class="card"><h2>Create a service</h2><form id="service-form" novalidate>
    <div class="row">${input('s-name', 'name', 'Name', 'optional: the engine picks one')}
      <div><label for="s-image">Image</label><input id="s-image" name="image" required placeholder="e.g. nginx:latest" data-error-hint="image|reference"></div></div>
    <div class="row"><div><label for="s-mode">Mode</label><select id="s-mode" name="mode">${option('replicated', 'replicated: a number of tasks')}${option('global', 'global: one task per node')}</select></div>
      <div><label for="s-replicas">Replicas</label><input id="s-replicas" name="replicas" type="number" min="0" value="1"></div></div>
    <label for="s-args">Command</label><input id="s-args" name="args" placeholder="default of the image, e.g. sh -c &quot;echo hello; sleep 3600&quot;">
    <fieldset><legend>Environment variables</legend><div id="s-env"></div></fieldset>
    <fieldset><legend>Published ports</legend><div id="s-ports"></div></fieldset>
    <fieldset><legend>Mounts</legend><div id="s-mounts"></div></fieldset>
    <fieldset><legend>Networks</legend>${swarmNetworks.map(n => `<label class="check"><input type="checkbox" name="networks" value="${esc(n.Id)}"> ${esc(n.Name)}</label>`).join('')
      || '<p class="muted small">No overlay network yet: the service joins the ingress network only.</p>'}</fieldset>
    <fieldset><legend>Configs (mounted as files)</legend><div id="s-configs"></div></fieldset>
    <fieldset><legend>Secrets (mounted under /run/secrets/)</legend><div id="s-secrets"></div></fieldset>
    <fieldset><legend>Labels</legend><div id="s-labels"></div></fieldset>
    <details class="svc-section"><summary>Placement</summary><div class="row">
      <div><label for="s-constraints">Constraints (one per line)</label><textarea id="s-constraints" name="constraints" placeholder="node.role==manager&#10;node.labels.zone!=b"></textarea></div>
      <div><label for="s-preferences">Preferences (one per line)</label><textarea id="s-preferences" name="preferences" placeholder="spread=node.labels.zone"></textarea></div></div></details>
    <details class="svc-section"><summary>Resources</summary><div class="row">
      ${input('s-limit-cpus', 'limitCpus', 'CPU limit (cores)', 'e.g. 0.5')}${input('s-limit-memory', 'limitMemory', 'Memory limit', 'e.g. 256M')}
      ${input('s-reserve-cpus', 'reserveCpus', 'CPU reservation (cores)', 'e.g. 0.25')}${input('s-reserve-memory', 'reserveMemory', 'Memory reservation', 'e.g. 128M')}</div></details>
    <details class="svc-section"><summary>Restart policy</summary><div class="row">
      <div><label for="s-restart">Restart</label><select id="s-restart" name="restartCondition">${option('', 'engine default (any)')}${option('any')}${option('on-failure')}${option('none')}</select></div>
      ${input('s-restart-delay', 'restartDelay', 'Delay', 'e.g. 5s')}${input('s-restart-attempts', 'restartMaxAttempts', 'Maximum attempts', 'unlimited', 'number')}
      ${input('s-restart-window', 'restartWindow', 'Window', 'e.g. 1m')}</div></details>
    ${policyFields('update', 'Update config')}${policyFields('rollback', 'Rollback config')}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create the service</button> <a href="#/env/${envId}/services">Cancel</a></p></form></div>`,
  envCrumbs(envId, servicesCrumb(envId), 'Create'));
  const form = $('#service-form');
  const getEnv = pairsEditor($('#s-env'), [{placeholder: 'NAME', name: 'envName'}, {placeholder: 'value'}], [], 'Add variable');
  const getPorts = pairsEditor($('#s-ports'), [{placeholder: 'published port (empty: any)', name: 'publishedPort', hint: 'port .* already in use|published port'},
    {placeholder: 'target port, e.g. 80', name: 'targetPort'}, {placeholder: 'protocol', options: ['tcp', 'udp', 'sctp']}, {placeholder: 'mode', options: ['ingress', 'host']}], [], 'Publish a port');
  const getMounts = pairsEditor($('#s-mounts'), [{placeholder: 'type', options: ['volume', 'bind', 'tmpfs']}, {placeholder: 'volume name or host path', name: 'mountSource', hint: 'bind mount|host path|mount'},
    {placeholder: '/path/in/container', name: 'mountTarget'}, {placeholder: 'access', options: ['read-write', 'read-only']}], [], 'Add a mount');
  const getConfigs = pairsEditor($('#s-configs'), [{placeholder: 'config', options: configs.map(c => c.Spec.Name)}, {placeholder: 'file in the container, e.g. /etc/app.conf', name: 'configName'}], [], configs.length ? 'Add a config' : 'Add a config (none yet)');
  const getSecrets = pairsEditor($('#s-secrets'), [{placeholder: 'secret', options: secrets.map(c => c.Spec.Name)}, {placeholder: 'file name (default: the secret\'s name)', name: 'secretName'}], [], secrets.length ? 'Add a secret' : 'Add a secret (none yet)');
  const getLabels = pairsEditor($('#s-labels'), [{placeholder: 'label name'}, {placeholder: 'value'}], [], 'Add label');
  $('#s-mode').addEventListener('change', () => { $('#s-replicas').disabled = $('#s-mode').value === 'global'; });
  $('#s-image').focus();
  onSubmit(form, async data => {
    let spec;
    try {
      spec = serviceSpec({name: data.get('name'), image: data.get('image'), mode: data.get('mode'), replicas: data.get('replicas') ?? '',
        args: data.get('args'), env: getEnv(), ports: getPorts(), mounts: getMounts(), networks: data.getAll('networks'),
        constraints: data.get('constraints'), preferences: data.get('preferences'),
        limitCpus: data.get('limitCpus'), limitMemory: data.get('limitMemory'), reserveCpus: data.get('reserveCpus'), reserveMemory: data.get('reserveMemory'),
        restart: {condition: data.get('restartCondition'), delay: data.get('restartDelay'), maxAttempts: data.get('restartMaxAttempts'), window: data.get('restartWindow')},
        update: policyOf(data, 'update'), rollback: policyOf(data, 'rollback'),
        labels: getLabels(), configs: getConfigs(), secrets: getSecrets()}, {configs, secrets});
    } catch (err) {
      const target = err.field && form.querySelector(`[name="${err.field}"]`);
      if (target && target.closest('details')) target.closest('details').open = true;
      return showError(form, err, target ? err.field : undefined);
    }
    const created = await api('POST', `${base}/services/create`, spec);
    toast(`Service ${spec.Name || shortId(created.ID)} created`);
    location.hash = `#/env/${envId}/services/${created.ID}`;
  });
}

const SERVICE_TABS = [['overview', 'Overview'], ['tasks', 'Tasks'], ['logs', 'Logs'], ['inspect', 'Inspect']];
export async function pageService(envId, serviceId, tab = 'overview') {
  const base = dockerBase(envId);
  let service = await api('GET', `${base}/services/${encodeURIComponent(serviceId)}`);
  const name = service.Spec.Name, id = service.ID;
  render(name, `<div class="toolbar"><h2>${esc(name)}</h2><span class="badge" id="svc-mode"></span><span class="spacer"></span>
    <button data-action="force">Force update</button><button data-action="rollback">Roll back</button><button class="danger" data-action="remove">Remove</button></div>
    <div class="error" role="alert" id="svc-error"></div>
    <nav class="tabs">${SERVICE_TABS.map(([t, l]) => `<a href="#/env/${envId}/services/${esc(id)}/${t}" class="${t === tab ? 'active' : ''}">${l}</a>`).join('')}</nav>
    <div id="tab"></div>`, envCrumbs(envId, servicesCrumb(envId), esc(name)));
  const showMode = () => { const m = service.Spec.Mode; $('#svc-mode').textContent = m.Replicated ? `replicated ${m.Replicated.Replicas}` : 'global'; };
  showMode();
  // Every change sends the spec the engine holds now, at its version: a change made meanwhile is refused, not lost.
  const change = async (makeSpec, query = '') => {
    $('#svc-error').textContent = '';
    const now = await api('GET', `${base}/services/${id}`);
    const answer = await api('POST', `${base}/services/${id}/update?version=${now.Version.Index}${query}`, makeSpec(now.Spec));
    for (const warning of (answer && answer.Warnings) || []) toast(warning, true);
    service = await api('GET', `${base}/services/${id}`); showMode();
  };
  const ctx = {envId, base, id, name, get service() { return service; }, set service(s) { service = s; showMode(); }, change};
  $$('[data-action]').forEach(b => b.addEventListener('click', async () => {
    const action = b.dataset.action; b.disabled = true;
    try {
      if (action === 'remove') {
        if (!confirm(`Remove service ${name}? Its tasks stop.`)) return;
        await api('DELETE', `${base}/services/${id}`); toast(`Service ${name} removed`); location.hash = `#/env/${envId}/services`; return;
      }
      if (action === 'force') { await change(forcedSpec); toast(`${name}: every task is being replaced`); }
      if (action === 'rollback') { await change(spec => spec, '&rollback=previous'); toast(`${name}: rolling back to the previous spec`); }
      if (ctx.refresh) await ctx.refresh();
    } catch (err) { if (err.name !== 'AbortError') { $('#svc-error').textContent = `${b.textContent}: ${err.message}`; } }
    finally { b.disabled = false; }
  }));
  const tabs = {overview: serviceOverview, tasks: serviceTasks, logs: serviceLogs,
    inspect: el => { el.innerHTML = `<div class="card tree"><ul>${jsonTree(service)}</ul></div>`; }};
  await (tabs[tab] || serviceOverview)($('#tab'), ctx);
}
// The tasks of one service with the names of their nodes.
async function tasksOf(ctx) {
  const filters = encodeURIComponent(JSON.stringify({service: [ctx.id]}));
  const [tasks, nodes] = await Promise.all([api('GET', `${ctx.base}/tasks?filters=${filters}`), api('GET', `${ctx.base}/nodes`).catch(() => [])]);
  const hosts = new Map(nodes.map(n => [n.ID, n.Description.Hostname]));
  return {tasks, host: nodeId => hosts.get(nodeId) || shortId(nodeId)};
}
function specSummary(s) {
  const c = s.TaskTemplate.ContainerSpec || {}, placement = s.TaskTemplate.Placement || {};
  const none = '<span class="muted">none</span>', list = items => items.length ? items.map(esc).join('<br>') : none;
  return `<dl class="kv"><dt>Image</dt><dd class="mono">${esc((c.Image || '').split('@')[0])}</dd>
    <dt>Command</dt><dd class="mono">${esc([...(c.Command || []), ...(c.Args || [])].join(' ')) || '<span class="muted">default of the image</span>'}</dd>
    <dt>Ports</dt><dd>${list(((s.EndpointSpec || {}).Ports || []).map(p => `${p.PublishedPort || '*'}:${p.TargetPort}/${p.Protocol} (${p.PublishMode})`))}</dd>
    <dt>Mounts</dt><dd>${list((c.Mounts || []).map(m => `${m.Type} ${m.Source || ''} → ${m.Target}${m.ReadOnly ? ' (read-only)' : ''}`))}</dd>
    <dt>Environment</dt><dd class="mono">${list(c.Env || [])}</dd>
    <dt>Constraints</dt><dd>${list(placement.Constraints || [])}</dd>
    <dt>Configs</dt><dd>${list((c.Configs || []).map(x => `${x.ConfigName} → ${(x.File || {}).Name}`))}</dd>
    <dt>Secrets</dt><dd>${list((c.Secrets || []).map(x => `${x.SecretName} → ${(x.File || {}).Name}`))}</dd>
    <dt>Labels</dt><dd class="mono">${list(Object.entries(s.Labels || {}).map(([k, v]) => `${k}=${v}`))}</dd></dl>`;
}
async function serviceOverview(el, ctx) {
  const replicated = !!ctx.service.Spec.Mode.Replicated;
  el.innerHTML = `<div class="grid2"><div class="card"><h3>Scale and update</h3>
    ${replicated ? `<form id="scale-form" class="row svc-inline" novalidate><div><label for="svc-replicas">Replicas</label><input id="svc-replicas" name="replicas" type="number" min="0"></div>
      <div class="narrow"><button type="submit" class="primary">Scale</button></div><div class="error" role="alert"></div></form>` : '<p class="muted">A global service runs one task on every node.</p>'}
    <form id="image-form" class="row svc-inline" novalidate><div><label for="svc-image">Image</label><input id="svc-image" name="image" data-error-hint="image|reference"></div>
      <div class="narrow"><button type="submit" class="primary">Roll out</button></div><div class="error" role="alert"></div></form>
    <h3>Spec</h3><div id="svc-spec"></div></div>
    <div class="card" id="rollout"><h3>Rollout</h3><p><span class="badge" id="rollout-state"></span> <span class="muted small" id="rollout-message"></span></p>
      <p><progress id="rollout-bar" max="1" value="0" aria-label="Tasks running the current spec"></progress> <span id="rollout-count"></span></p>
      <div class="table-wrap"><table><thead><tr><th>Slot</th><th>Task</th><th class="hide-sm">Node</th><th>Image</th><th>State</th><th class="hide-sm">Error</th></tr></thead><tbody id="rollout-tasks"></tbody></table></div></div></div>`;
  const fill = () => { const s = ctx.service.Spec;
    if (replicated) $('#svc-replicas').value = s.Mode.Replicated.Replicas;
    $('#svc-image').value = (s.TaskTemplate.ContainerSpec.Image || '').split('@')[0]; $('#svc-spec').innerHTML = specSummary(s); };
  fill();
  const refresh = async () => {
    ctx.service = await api('GET', `${ctx.base}/services/${ctx.id}`);
    const {tasks, host} = await tasksOf(ctx);
    const p = rolloutProgress(ctx.service, tasks);
    $('#rollout-state').textContent = p.state; $('#rollout-state').className = `badge ${p.done ? 'updated' : 'outdated'}`;
    $('#rollout-message').textContent = p.message;
    $('#rollout-bar').max = Math.max(1, p.total); $('#rollout-bar').value = p.updated;
    $('#rollout-count').textContent = `${p.updated} of ${p.total} tasks run the current spec${p.done ? ' · done' : ''}`;
    $('#rollout').dataset.done = p.done ? 'yes' : 'no';
    $('#rollout-tasks').innerHTML = p.slots.map(sl => `<tr class="${sl.current ? 'svc-current' : 'svc-old'}"><td>${esc(sl.key)}</td>
      <td class="mono">${esc(shortId(sl.task.ID))}</td><td class="hide-sm">${esc(host(sl.task.NodeID))}</td>
      <td class="mono">${esc(sl.image.split('@')[0])} <span class="badge ${sl.current ? 'updated' : 'outdated'}">${sl.current ? 'current' : 'previous'}</span></td>
      <td><span class="${esc(sl.state)}">${esc(sl.state)}</span> <span class="muted small">→ ${esc(sl.desired)}</span></td><td class="hide-sm small">${esc(sl.error)}</td></tr>`).join('')
      || `<tr><td colspan="6" class="empty">No task should run now.</td></tr>`;
  };
  ctx.refresh = refresh;
  if (replicated) onSubmit($('#scale-form'), async data => {
    await ctx.change(spec => scaledSpec(spec, data.get('replicas')));
    toast(`${ctx.name} scaled to ${data.get('replicas')}`); fill(); await refresh();
  });
  onSubmit($('#image-form'), async data => {
    await ctx.change(spec => withImage(spec, data.get('image')));
    toast(`${ctx.name}: rolling out ${data.get('image')}`); fill(); await refresh();
  });
  await refresh();
  watchEngine(ctx.envId, ['service', 'node'], refresh, 2000);
}
async function serviceTasks(el, ctx) {
  el.innerHTML = '<div id="tasks"></div>';
  let host = x => x;
  const table = dataTable($('#tasks'), {id: t => t.ID, filterPlaceholder: 'Filter tasks', empty: 'This service has no task.', sortKey: 'since',
    columns: [
      {key: 'name', label: 'Task', value: t => taskName(ctx.name, t), html: t => `${esc(taskName(ctx.name, t))} <span class="muted small mono">${esc(shortId(t.ID))}</span>`},
      {key: 'node', label: 'Node', value: t => host(t.NodeID)},
      {key: 'state', label: 'State', value: t => t.Status.State, html: t => `<span class="${esc(t.Status.State)}">${esc(t.Status.State)}</span>`},
      {key: 'desired', label: 'Desired state', value: t => t.DesiredState},
      {key: 'image', label: 'Image', value: t => (((t.Spec || {}).ContainerSpec || {}).Image || '').split('@')[0], cls: 'hide-sm'},
      {key: 'error', label: 'Error', value: t => t.Status.Err || '', cls: 'small'},
      {key: 'since', label: 'Since', value: t => -Date.parse(t.Status.Timestamp), html: t => `<span title="${esc(fmtDate(t.Status.Timestamp))}">${fmtAgo(t.Status.Timestamp)}</span>`},
    ]});
  const refresh = async () => { const found = await tasksOf(ctx); host = found.host; table.setRows(found.tasks); };
  ctx.refresh = refresh;
  await refresh(); watchEngine(ctx.envId, ['service', 'node'], refresh, 3000);
}

const MAX_LOG_LINES = 10000;
// The service's logs: GET /services/{id}/logs with follow, every line tagged with its task in a stable colour.
async function serviceLogs(el, ctx) {
  el.innerHTML = `<div class="toolbar"><input class="filter" id="log-search" type="search" placeholder="Search logs" aria-label="Search logs">
    <label class="check"><input type="checkbox" id="log-follow" checked> Follow</label>
    <label class="check"><input type="checkbox" id="log-ts"> Timestamps</label>
    <label for="log-tail" class="check">Lines <select id="log-tail"><option>100</option><option selected>1000</option><option value="all">all</option></select></label>
    <span class="spacer"></span><span class="muted small" id="log-count"></span><button id="log-download">Download</button></div>
    <div class="logs" id="logs" tabindex="0" aria-label="Service logs" aria-live="off"></div>`;
  const box = $('#logs'), names = new Map();
  let lines = [], partial = {1: '', 2: ''}, scheduled = false, controller = null;
  const learnNames = async () => { const {tasks} = await tasksOf(ctx); for (const t of tasks) names.set(t.ID, taskName(ctx.name, t)); };
  await learnNames().catch(() => {});
  const tagOf = task => names.get(task) || (task ? shortId(task) : ctx.name);
  const draw = () => {
    scheduled = false;
    const q = $('#log-search').value.toLowerCase(), showTs = $('#log-ts').checked;
    const shown = q ? lines.filter(l => l.text.toLowerCase().includes(q) || tagOf(l.task).toLowerCase().includes(q)) : lines;
    box.innerHTML = shown.slice(-3000).map(l => `<div class="${l.stream === 2 ? 'err' : ''}">${showTs && l.ts ? `<span class="ts">${esc(l.ts)} </span>` : ''}<span class="svc-tag svc-tag${tagColour(l.task)}">${esc(tagOf(l.task))}</span> ${esc(l.text)}</div>`).join('');
    $('#log-count').textContent = `${lines.length} lines` + (q ? ` · ${shown.length} shown` : '');
    if ($('#log-follow').checked) box.scrollTop = box.scrollHeight;
  };
  const schedule = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(draw); } };
  const onText = (stream, text) => {
    const parts = (partial[stream] + text).split('\n'); partial[stream] = parts.pop();
    for (const raw of parts) { const line = parseServiceLogLine(raw); lines.push({stream, ...line}); if (line.task && !names.has(line.task)) learnNames().then(schedule, () => {}); }
    if (lines.length > MAX_LOG_LINES) lines = lines.slice(-MAX_LOG_LINES);
    schedule();
  };
  const start = () => {
    if (controller) controller.abort();
    controller = new AbortController(); lines = []; partial = {1: '', 2: ''};
    const url = `${ctx.base}/services/${ctx.id}/logs?stdout=1&stderr=1&timestamps=1&details=1&follow=1&tail=${$('#log-tail').value}`;
    apiStream('GET', url, undefined, dockerStreamDecoder(!!ctx.service.Spec.TaskTemplate.ContainerSpec.TTY, onText), undefined, controller.signal)
      .catch(err => { if (err.name !== 'AbortError') box.insertAdjacentHTML('beforeend', `<div class="err" role="alert">${esc(err.message)}</div>`); });
    schedule();
  };
  onLeave(() => controller && controller.abort());
  $('#log-search').addEventListener('input', schedule);
  ['#log-ts', '#log-follow'].forEach(s => $(s).addEventListener('change', schedule));
  $('#log-tail').addEventListener('change', start);
  box.addEventListener('scroll', () => { const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 20; if (!atEnd && $('#log-follow').checked && !scheduled) $('#log-follow').checked = false; });
  $('#log-download').addEventListener('click', () => {
    const text = lines.map(l => `${$('#log-ts').checked && l.ts ? l.ts + ' ' : ''}${tagOf(l.task)} ${l.text}`).join('\n') + '\n';
    const url = URL.createObjectURL(new Blob([text], {type: 'text/plain'}));
    download(url, `${ctx.name}.log`); setTimeout(() => URL.revokeObjectURL(url), 5000);
  });
  start();
}
