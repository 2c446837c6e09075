// Pages: create a Swarm config or secret (from text or a file), inspect one (a secret's data is never shown: the
// engine does not give it back, and the page would not show it if it did), remove it.
import {api} from '../api.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, showError, toast} from '../feedback.js';
import {esc, fmtDate} from '../format.js';
import {base64Of, textOfBase64} from '../service-spec.js';
import {envCrumbs, render} from '../shell.js';
import {jsonTree, pairsEditor} from '../widgets.js';

const KINDS = {configs: {one: 'config', title: 'Config', refs: 'Configs', idKey: 'ConfigID'},
  secrets: {one: 'secret', title: 'Secret', refs: 'Secrets', idKey: 'SecretID'}};
const MAX_DATA = 500 * 1024; // the engine's limit for one config or secret
const listCrumb = (envId, kind) => `<a href="#/env/${envId}/${kind}">${KINDS[kind].refs}</a>`;

export async function pageSwarmDataCreate(envId, kind) {
  const k = KINDS[kind];
  render(`Create ${k.one}`, `<div class="card"><h2>Create a ${k.one}</h2><form id="data-form" novalidate>
    <label for="d-name">Name</label><input id="d-name" name="name" required data-error-hint="name|exists">
    <fieldset><legend>Content</legend>
      <label class="check"><input type="radio" name="source" value="text" checked> Type it</label>
      <label class="check"><input type="radio" name="source" value="file"> From a file</label>
      <label for="d-text">Text</label><textarea id="d-text" name="text" autocomplete="off" spellcheck="false"></textarea>
      <label for="d-file">File</label><input id="d-file" name="file" type="file" disabled></fieldset>
    <fieldset><legend>Labels</legend><div id="d-labels"></div></fieldset>
    ${kind === 'secrets' ? '<p class="muted small">Once saved, a secret\'s content is never shown again: only services it is given to read it.</p>' : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create the ${k.one}</button> <a href="#/env/${envId}/${kind}">Cancel</a></p></form></div>`,
  envCrumbs(envId, listCrumb(envId, kind), 'Create'));
  const form = $('#data-form');
  const getLabels = pairsEditor($('#d-labels'), [{placeholder: 'label name'}, {placeholder: 'value'}], [], 'Add label');
  form.addEventListener('change', e => { if (e.target.name === 'source') { const file = e.target.value === 'file'; $('#d-file').disabled = !file; $('#d-text').disabled = file; } });
  $('#d-name').focus();
  onSubmit(form, async data => {
    const name = data.get('name').trim();
    if (!name) return showError(form, new Error(`A ${k.one} needs a name`), 'name');
    let bytes;
    if (data.get('source') === 'file') {
      const file = $('#d-file').files[0];
      if (!file) return showError(form, new Error('Choose a file'), 'file');
      bytes = new Uint8Array(await file.arrayBuffer());
    } else bytes = new TextEncoder().encode(data.get('text') || '');
    if (!bytes.length) return showError(form, new Error(`The ${k.one} is empty`), data.get('source') === 'file' ? 'file' : 'text');
    if (bytes.length > MAX_DATA) return showError(form, new Error(`A ${k.one} holds at most 500 KB`), data.get('source') === 'file' ? 'file' : 'text');
    const created = await api('POST', `${dockerBase(envId)}/${kind}/create`, {Name: name, Labels: Object.fromEntries(getLabels()), Data: base64Of(bytes)});
    toast(`${k.title} ${name} created`);
    location.hash = `#/env/${envId}/${kind}/${created.ID}`;
  });
}

export async function pageSwarmData(envId, kind, itemId) {
  const k = KINDS[kind], base = dockerBase(envId);
  const [item, services] = await Promise.all([api('GET', `${base}/${kind}/${encodeURIComponent(itemId)}`), api('GET', `${base}/services`).catch(() => [])]);
  const shown = {...item, Spec: {...item.Spec}};
  if (kind === 'secrets') delete shown.Spec.Data;
  const name = item.Spec.Name, text = kind === 'configs' ? textOfBase64(item.Spec.Data) : null;
  const users = services.filter(s => ((s.Spec.TaskTemplate.ContainerSpec || {})[k.refs] || []).some(r => r[k.idKey] === item.ID));
  render(name, `<div class="toolbar"><h2>${esc(name)}</h2><span class="badge">${k.one}</span><span class="spacer"></span>
    <button class="danger" id="data-remove">Remove</button></div><div class="error" role="alert" id="data-error"></div>
    <div class="grid2"><div class="card"><dl class="kv"><dt>ID</dt><dd class="mono">${esc(item.ID)}</dd><dt>Created</dt><dd>${fmtDate(item.CreatedAt)}</dd>
      <dt>Updated</dt><dd>${fmtDate(item.UpdatedAt)}</dd>
      <dt>Labels</dt><dd class="mono">${esc(Object.entries(item.Spec.Labels || {}).map(([a, b]) => `${a}=${b}`).join('\n')) || '<span class="muted">none</span>'}</dd>
      <dt>Used by</dt><dd>${users.map(s => `<a href="#/env/${envId}/services/${esc(s.ID)}">${esc(s.Spec.Name)}</a>`).join(', ') || '<span class="muted">no service</span>'}</dd></dl></div>
    <div class="card"><h3>Content</h3>${kind === 'secrets' ? '<p class="muted" id="data-content">A secret\'s content is never shown. Only the services it is given to read it, as a file under /run/secrets/.</p>'
      : text === null ? '<p class="muted" id="data-content">Binary content (not shown as text).</p>' : `<pre class="copyable mono small" id="data-content">${esc(text)}</pre>`}</div></div>
    <details class="card tree"><summary>Inspect</summary><ul>${jsonTree(shown)}</ul></details>`,
  envCrumbs(envId, listCrumb(envId, kind), esc(name)));
  $('#data-remove').addEventListener('click', async () => {
    if (!confirm(`Remove ${k.one} ${name}?`)) return;
    try { await api('DELETE', `${base}/${kind}/${item.ID}`); toast(`${k.title} ${name} removed`); location.hash = `#/env/${envId}/${kind}`; }
    catch (err) { if (err.name !== 'AbortError') $('#data-error').textContent = err.message; }
  });
}
