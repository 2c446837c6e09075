// Pages: the volumes of an environment, and the volume browser of agent environments.
import {api, request} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc, fmtDate} from '../format.js';
import {$app, bindShell, envCrumbs, render, shell} from '../shell.js';
import {dataTable} from '../table.js';
import {pairsEditor} from '../widgets.js';

export async function pageVolumes(envId) {
  const base = dockerBase(envId);
  render('Volumes', `<div class="toolbar"><h2>Volumes</h2></div>
    <form class="card" id="volume-create"><h3>Create a volume</h3><div class="row"><div><label for="v-name">Name</label><input id="v-name" name="Name" placeholder="generated when empty"></div>
    <div><label for="v-driver">Driver</label><input id="v-driver" name="Driver" value="local"></div></div>
    <fieldset><legend>Driver options</legend><div id="v-opts"></div></fieldset><fieldset><legend>Labels</legend><div id="v-labels"></div></fieldset>
    <div class="error" role="alert"></div><button class="primary" type="submit">Create the volume</button></form><div id="volume-warnings"></div><div class="card" id="volumes"></div>`, envCrumbs(envId, 'Volumes'));
  const node = v => (v.Portainer && v.Portainer.Agent && v.Portainer.Agent.NodeName) || '';
  const getOpts = pairsEditor($('#v-opts'), [{placeholder: 'option'}, {placeholder: 'value'}], [], 'Add option');
  const getLabels = pairsEditor($('#v-labels'), [{placeholder: 'label'}, {placeholder: 'value'}], [], 'Add label');
  const table = dataTable($('#volumes'), {
    id: v => v.Name, selectable: true, filterPlaceholder: 'Filter volumes', empty: 'No volumes.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'name', label: 'Name', value: v => v.Name, html: v => `<a class="mono" href="#/env/${envId}/volumes/${encodeURIComponent(v.Name)}">${esc(v.Name)}</a>
        <a class="small" href="#/env/${envId}/volumes/${encodeURIComponent(v.Name)}/browse?node=${encodeURIComponent(node(v))}" title="Browse files (agent environments)">browse</a>`},
      {key: 'driver', label: 'Driver', value: v => v.Driver}, {key: 'node', label: 'Node', value: node, cls: 'hide-sm'},
      {key: 'mount', label: 'Mount point', value: v => v.Mountpoint, cls: 'hide-sm mono small'},
      {key: 'created', label: 'Created', value: v => v.CreatedAt, html: v => fmtDate(v.CreatedAt), cls: 'hide-sm'}],
    onSelectionChange: sel => { $('#volumes [data-action]').disabled = sel.size === 0; },
  });
  const load = async () => { const answer = await api('GET', `${base}/volumes`); table.setRows(answer.Volumes || []);
    $('#volume-warnings').innerHTML = (answer.Warnings || []).map(w => `<p class="error">${esc(w)}</p>`).join(''); };
  $('#volumes').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    const names = table.selected(); if (!confirm(`Remove ${names.length} volume(s) and their data?`)) return;
    for (const n of names) { try { await api('DELETE', `${base}/volumes/${encodeURIComponent(n)}`); } catch (err) { toast(`Remove ${n}: ${err.message}`, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#volume-create'), async data => {
    const v = await api('POST', `${base}/volumes/create`, {Name: data.get('Name').trim(), Driver: data.get('Driver') || 'local', DriverOpts: Object.fromEntries(getOpts()), Labels: Object.fromEntries(getLabels())});
    toast(`Volume ${v.Name} created`); $('#volume-create').reset(); getOpts.clear(); getLabels.clear(); await load();
  });
  await load(); watchEngine(envId, ['volume'], load);
}
// The agent's file API on one node of the environment (the agent routes on X-PortainerAgent-Target).
function agentFetch(method, path, node, body) {
  return request(method, path, {body, headers: node ? {'X-PortainerAgent-Target': node} : {}});
}
export async function pageBrowse(id, volume, node, path) {
  const base = `/api/endpoints/${id}/docker/v2/browse`;
  const q = p => `volumeID=${encodeURIComponent(volume)}&path=${encodeURIComponent(p)}`;
  const join = name => (path.endsWith('/') ? path : path + '/') + name;
  const entries = await (await agentFetch('GET', `${base}/ls?${q(path)}`, node)).json();
  const parent = path.replace(/\/[^/]*\/?$/, '') || '/';
  $app.innerHTML = shell(`<div class="card"><h2>Volume ${esc(volume)}: ${esc(path)}</h2>
    <div class="toolbar">${path !== '/' ? `<button id="up">Up</button>` : ''}<input type="file" id="file" aria-label="File to upload">
    <button class="primary" id="upload">Upload here</button><div class="error" role="alert" id="err"></div></div>
    <table><tr><th>Name</th><th>Size</th><th>Modified</th><th></th></tr>${entries.map((e, i) => `<tr>
    <td>${e.Dir ? `<a href="#" data-open="${i}">${esc(e.Name)}/</a>` : esc(e.Name)}</td><td>${e.Dir ? '' : e.Size}</td>
    <td>${new Date(e.ModTime * 1000).toLocaleString()}</td><td>${e.Dir ? '' : `<button data-get="${i}">Download</button>`}
    <button data-ren="${i}">Rename</button> <button class="danger" data-del="${i}">Delete</button></td></tr>`).join('')}</table></div>`);
  bindShell();
  const again = p => pageBrowse(id, volume, node, p);
  const err = document.getElementById('err');
  const act = fn => async ev => { ev.preventDefault(); try { await fn(entries[ev.target.dataset.open ?? ev.target.dataset.get ?? ev.target.dataset.ren ?? ev.target.dataset.del]); } catch (e) { err.textContent = e.message; } };
  const up = document.getElementById('up'); if (up) up.onclick = () => again(parent);
  document.querySelectorAll('[data-open]').forEach(a => a.onclick = act(async e => again(join(e.Name))));
  document.querySelectorAll('[data-get]').forEach(b => b.onclick = act(async e => {
    const blob = await (await agentFetch('GET', `${base}/get?${q(join(e.Name))}`, node)).blob();
    const a = document.createElement('a'); a.href = URL.createObjectURL(blob); a.download = e.Name; a.click(); URL.revokeObjectURL(a.href); }));
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = act(async e => {
    if (!confirm(`Delete ${e.Name}?`)) return; await agentFetch('DELETE', `${base}/delete?${q(join(e.Name))}`, node); again(path); }));
  document.querySelectorAll('[data-ren]').forEach(b => b.onclick = act(async e => {
    const name = prompt('New name', e.Name); if (!name || name === e.Name) return;
    await agentFetch('PUT', `${base}/rename?${q(join(e.Name))}&newPath=${encodeURIComponent(join(name))}`, node); again(path); }));
  document.getElementById('upload').onclick = act(async () => {
    const file = document.getElementById('file').files[0]; if (!file) return;
    const form = new FormData(); form.append('file', file, file.name);
    await agentFetch('POST', `${base}/put?${q(path)}`, node, form); again(path); });
}
