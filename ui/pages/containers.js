// Pages: the containers of an environment (list with bulk actions) and the create/duplicate form.
import {api} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {onSubmit, showError, toast} from '../feedback.js';
import {containerName, esc, fmtAgo, fmtDate, shortId} from '../format.js';
import {imageUpdates} from '../image-updates.js';
import {envIsSwarm, session} from '../session.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';
import {pairsEditor} from '../widgets.js';

export function portLinks(c) {
  const host = (session.currentEnv && session.currentEnv.PublicURL) || location.hostname;
  const seen = new Set();
  return (c.Ports || []).filter(p => p.PublicPort && !seen.has(p.PublicPort + p.Type) && seen.add(p.PublicPort + p.Type))
    .map(p => p.Type === 'tcp' ? `<a href="http://${esc(host)}:${p.PublicPort}" target="_blank" rel="noopener noreferrer">${p.PublicPort}:${p.PrivatePort}</a>` : `${p.PublicPort}:${p.PrivatePort}/${p.Type}`).join(' ');
}
export async function pageContainers(envId) {
  const base = dockerBase(envId);
  const main = render('Containers', `<div class="toolbar"><h2>Containers</h2><span class="spacer"></span>
    <button id="check-updates">Check for image updates</button>
    <a class="button" href="#/env/${envId}/logs" id="selection-logs">Logs</a>
    <a class="button primary" href="#/env/${envId}/containers/new">Add container</a></div><div id="containers"></div>`, envCrumbs(envId, 'Containers'));
  const updates = imageUpdates(envId, () => table.setRows(table.rows()), () => load());
  const actions = ['start', 'stop', 'restart', 'kill', 'pause', 'unpause', 'remove'].map(a => `<button class="${a === 'remove' ? 'danger' : ''}" data-action="${a}" disabled>${a[0].toUpperCase() + a.slice(1)}</button>`).join('');
  const label = (c, k) => (c.Labels || {})[k] || '';
  const table = dataTable($('#containers'), {
    id: c => c.Id, selectable: true, actions, filterPlaceholder: 'Filter containers', empty: 'No containers on this environment.',
    columns: [
      {key: 'name', label: 'Name', value: containerName, html: c => `<a href="#/env/${envId}/containers/${esc(c.Id)}">${esc(containerName(c))}</a>`},
      {key: 'state', label: 'State', value: c => c.State, html: c => `<span class="${esc(c.State)}">${esc(c.State)}</span> <span class="muted small hide-sm">${esc(c.Status)}</span>`},
      {key: 'stack', label: 'Stack', value: c => label(c, 'com.docker.compose.project') || label(c, 'com.docker.stack.namespace'), cls: 'hide-sm'},
      {key: 'image', label: 'Image', value: c => c.Image, html: c => (c.Image.startsWith('sha256:') ? `<span class="mono" title="${esc(c.Image)}">${esc(shortId(c.Image))}</span>` : esc(c.Image))},
      {key: 'update', label: 'Image update', value: updates.value, html: updates.cell},
      {key: 'created', label: 'Created', value: c => c.Created, html: c => `<span title="${esc(fmtDate(c.Created))}">${fmtAgo(c.Created)}</span>`, cls: 'hide-sm'},
      {key: 'ip', label: 'IP', value: c => Object.values((c.NetworkSettings || {}).Networks || {}).map(n => n.IPAddress).filter(Boolean).join(' '), cls: 'hide-sm'},
      {key: 'ports', label: 'Published ports', html: portLinks, cls: 'hide-sm'},
      {key: 'node', label: 'Node', value: c => label(c, 'com.docker.swarm.node.id') ? label(c, 'com.docker.swarm.node.id').slice(0, 12) : '', cls: 'hide-sm'},
    ].filter(col => col.key !== 'node' || envIsSwarm(session.currentEnv)),
    onSelectionChange: sel => { $$('[data-action]', main).forEach(b => { b.disabled = sel.size === 0; });
      $('#selection-logs').href = `#/env/${envId}/logs${sel.size ? '?containers=' + [...sel].map(id => id.slice(0, 12)).join(',') : ''}`;
      $('#selection-logs').textContent = sel.size ? `Logs of ${sel.size} selected` : 'Logs'; },
  });
  const load = async () => { table.setRows(await api('GET', `${base}/containers/json?all=1`));
    if (updates.missing(table.rows())) updates.load(false); };
  updates.bind(main);
  $('#check-updates').addEventListener('click', () => updates.load(true));
  $$('[data-action]', main).forEach(b => b.addEventListener('click', async () => {
    const ids = table.selected(), action = b.dataset.action;
    if (action === 'remove' && !confirm(`Remove ${ids.length} container(s)? Their data outside volumes is lost.`)) return;
    $$('[data-action]', main).forEach(x => { x.disabled = true; });
    const results = await Promise.allSettled(ids.map(id => action === 'remove' ? api('DELETE', `${base}/containers/${id}?force=1&v=0`) : api('POST', `${base}/containers/${id}/${action}`)));
    const failed = results.map((r, i) => [r, ids[i]]).filter(([r]) => r.status === 'rejected');
    failed.forEach(([r, id]) => toast(`${action} ${shortId(id)}: ${r.reason.message}`, true));
    if (ids.length > failed.length) toast(`${action}: ${ids.length - failed.length} container(s) done`);
    table.clearSelection(); await load();
  }));
  await load(); watchEngine(envId, ['container'], load);
}
export async function pageContainerCreate(envId) {
  const base = dockerBase(envId);
  const from = new URLSearchParams(location.hash.split('?')[1] || '').get('from');
  const [source, networks, volumes] = await Promise.all([from ? api('GET', `${base}/containers/${from}/json`) : null,
    api('GET', `${base}/networks`), api('GET', `${base}/volumes`)]);
  const cfg = (source && source.Config) || {}, host = (source && source.HostConfig) || {};
  const ports = Object.entries(host.PortBindings || {}).flatMap(([cport, binds]) => (binds || []).map(b => [b.HostPort, cport.split('/')[0], cport.split('/')[1] || 'tcp']));
  const env = (cfg.Env || []).map(e => [e.split('=')[0], e.split('=').slice(1).join('=')]);
  const labels = Object.entries(cfg.Labels || {}).filter(([k]) => !k.startsWith('com.docker.'));
  const mounts = (host.Binds || []).map(b => b.split(':'));
  const netNow = Object.keys(((source && source.NetworkSettings) || {}).Networks || {})[0] || host.NetworkMode || 'bridge';
  const title = source ? `Duplicate / edit ${esc(containerName(source))}` : 'Create a container';
  render('Create container', `<div class="card"><h2>${title}</h2><form id="create" novalidate>
    <div class="row"><div><label for="c-name">Name</label><input id="c-name" name="name" value="${esc(source ? containerName(source) : '')}" placeholder="optional"></div>
    <div><label for="c-image">Image</label><input id="c-image" name="Image" required value="${esc(cfg.Image || '')}" placeholder="e.g. nginx:latest" data-error-hint="image|No such image|reference"></div></div>
    <div class="row"><div><label for="c-cmd">Command</label><input id="c-cmd" name="Cmd" value="${esc((cfg.Cmd || []).join(' '))}" placeholder="default of the image"></div>
    <div><label for="c-entry">Entrypoint</label><input id="c-entry" name="Entrypoint" value="${esc((cfg.Entrypoint || []).join(' '))}" placeholder="default of the image"></div></div>
    <fieldset><legend>Ports (host → container)</legend><div id="c-ports"></div></fieldset>
    <fieldset><legend>Environment variables</legend><div id="c-env"></div></fieldset>
    <fieldset><legend>Volumes (volume name or host path → container path)</legend><div id="c-volumes"></div></fieldset>
    <div class="row"><div><label for="c-network">Network</label><select id="c-network" name="network">${networks.map(n => `<option ${n.Name === netNow ? 'selected' : ''}>${esc(n.Name)}</option>`).join('')}</select></div>
    <div><label for="c-restart">Restart policy</label><select id="c-restart" name="restart">${['no', 'always', 'unless-stopped', 'on-failure'].map(p => `<option ${p === ((host.RestartPolicy || {}).Name || 'no') ? 'selected' : ''}>${p}</option>`).join('')}</select></div>
    <div><label for="c-memory">Memory limit (MB)</label><input id="c-memory" name="memory" type="number" min="0" value="${host.Memory ? Math.round(host.Memory / 1048576) : ''}" data-error-hint="memory"></div>
    <div><label for="c-cpus">CPU limit (cores)</label><input id="c-cpus" name="cpus" type="number" min="0" step="0.1" value="${host.NanoCpus ? host.NanoCpus / 1e9 : ''}" data-error-hint="cpu"></div></div>
    <fieldset><legend>Labels</legend><div id="c-labels"></div></fieldset>
    <div class="row"><label class="check narrow"><input type="checkbox" name="tty" ${cfg.Tty ? 'checked' : ''}> Interactive TTY (-it)</label>
    <label class="check narrow"><input type="checkbox" name="privileged" data-error-hint="privileged" ${host.Privileged ? 'checked' : ''}> Privileged</label>
    ${source ? '<label class="check narrow"><input type="checkbox" name="replace" checked> Replace the original container</label>' : ''}</div>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Deploy the container</button> <a href="#/env/${envId}/containers">Cancel</a></p></form></div>`,
    envCrumbs(envId, `<a href="#/env/${envId}/containers">Containers</a>`, 'Create'));
  const volumeNames = (volumes.Volumes || []).map(v => v.Name);
  const getPorts = pairsEditor($('#c-ports'), [{placeholder: 'host port, e.g. 8080', name: 'hostPort', hint: 'port is already allocated|address already in use|host port'}, {placeholder: 'container port, e.g. 80', name: 'containerPort'}, {placeholder: 'protocol', options: ['tcp', 'udp']}], ports, 'Publish a port');
  const getEnv = pairsEditor($('#c-env'), [{placeholder: 'NAME'}, {placeholder: 'value'}], env, 'Add variable');
  const getVolumes = pairsEditor($('#c-volumes'), [{placeholder: `volume (${volumeNames.slice(0, 3).join(', ') || 'name'}) or /host/path`, name: 'volumeSource', hint: 'bind mount|host path|volume'}, {placeholder: '/path/in/container', name: 'volumeTarget'}], mounts, 'Map a volume');
  const getLabels = pairsEditor($('#c-labels'), [{placeholder: 'label name'}, {placeholder: 'value'}], labels, 'Add label');
  const form = $('#create'); $('#c-image').focus();
  onSubmit(form, async data => {
    const image = data.get('Image').trim();
    if (!image) return showError(form, new Error('An image is required'), 'Image');
    const split = s => s.trim() ? s.trim().match(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g).map(a => a.replace(/^["']|["']$/g, '')) : undefined;
    const exposed = {}, bindings = {};
    for (const [hostPort, containerPort, proto] of getPorts()) {
      if (!/^\d+$/.test(containerPort)) return showError(form, new Error(`Container port "${containerPort}" must be a number`), 'containerPort');
      const key = `${containerPort}/${proto || 'tcp'}`; exposed[key] = {}; (bindings[key] = bindings[key] || []).push({HostPort: hostPort || ''});
    }
    const body = {Image: image, Cmd: split(data.get('Cmd')), Entrypoint: split(data.get('Entrypoint')),
      Env: getEnv().map(([k, v]) => `${k}=${v}`), Labels: Object.fromEntries(getLabels()), Tty: !!data.get('tty'), OpenStdin: !!data.get('tty'),
      ExposedPorts: exposed,
      HostConfig: {PortBindings: bindings, Binds: getVolumes().map(([s, t]) => `${s}:${t}`), NetworkMode: data.get('network'),
        RestartPolicy: {Name: data.get('restart'), MaximumRetryCount: 0}, Privileged: !!data.get('privileged'),
        Memory: data.get('memory') ? Math.round(+data.get('memory') * 1048576) : 0, NanoCpus: data.get('cpus') ? Math.round(+data.get('cpus') * 1e9) : 0}};
    const name = data.get('name').trim();
    if (source && data.get('replace')) {
      await api('POST', `${base}/containers/${source.Id}/stop`).catch(() => {});
      await api('POST', `${base}/containers/${source.Id}/rename?name=${encodeURIComponent(containerName(source) + '-old-' + Date.now())}`);
    }
    const created = await api('POST', `${base}/containers/create${name ? '?name=' + encodeURIComponent(name) : ''}`, body);
    try { await api('POST', `${base}/containers/${created.Id}/start`); }
    catch (err) { toast(`Created but not started: ${err.message}`, true); }
    if (source && data.get('replace')) await api('DELETE', `${base}/containers/${source.Id}?force=1`).catch(err => toast(err.message, true));
    toast(`Container ${name || shortId(created.Id)} deployed`);
    location.hash = `#/env/${envId}/containers/${created.Id}`;
  });
}
