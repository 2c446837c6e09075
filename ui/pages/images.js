// Page: images (pull with per-layer progress, build, import/export, tag, remove).
import {api, apiStream} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {download, onSubmit, showError, toast} from '../feedback.js';
import {esc, fmtBytes, fmtDate, shortId} from '../format.js';
import {registryChoice} from './registries.js';
import {envCrumbs, render} from '../shell.js';
import {jsonLines} from '../streams.js';
import {dataTable} from '../table.js';
import {progressView} from '../widgets.js';

export async function pageImages(envId) {
  const base = dockerBase(envId);
  render('Images', `<div class="toolbar"><h2>Images</h2></div>
    <div class="grid2"><form class="card" id="pull"><h3>Pull an image</h3><div class="row"><div><label for="pull-image">Image</label>
      <input id="pull-image" name="image" required placeholder="e.g. registry:5000/app:1.2" data-error-hint="image|reference|repository|manifest"></div>
      <div><label for="pull-registry">Registry</label><select id="pull-registry" name="registry"><option value="">none (public, or the engine's login)</option></select></div></div>
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Pull</button></p><div id="pull-progress"></div></form>
    <form class="card" id="build"><h3>Build from a context</h3><label for="build-tag">Tag</label><input id="build-tag" name="tag" placeholder="myapp:latest">
      <label for="build-file">Build context (.tar or .tar.gz with a Dockerfile)</label><input id="build-file" type="file" name="context" required accept=".tar,.tgz,.gz,application/x-tar,application/gzip">
      <label for="build-dockerfile">Dockerfile path in the context</label><input id="build-dockerfile" name="dockerfile" value="Dockerfile">
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Build</button></p><div id="build-progress"></div></form>
    <form class="card" id="import"><h3>Import images</h3><label for="import-file">Image archive (from docker save or Export)</label>
      <input id="import-file" type="file" name="archive" required accept=".tar,application/x-tar">
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Import</button></p><div id="import-progress"></div></form></div>
    <div class="card" id="images"></div>`, envCrumbs(envId, 'Images'));
  const usedBy = new Map();
  const table = dataTable($('#images'), {
    id: i => i.Id, selectable: true, filterPlaceholder: 'Filter images', empty: 'No images.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button><button data-action="export" disabled>Export</button><input id="tag-name" class="filter" placeholder="new tag, e.g. app:v2" aria-label="New tag"><button data-action="tag" disabled>Tag</button>',
    columns: [
      {key: 'id', label: 'Id', value: i => shortId(i.Id), html: i => `<a class="mono" href="#/env/${envId}/images/${encodeURIComponent(i.Id)}">${esc(shortId(i.Id))}</a> ${usedBy.get(i.Id) ? '' : '<span class="badge">unused</span>'}`},
      {key: 'tags', label: 'Tags', value: i => (i.RepoTags || []).filter(t => t !== '<none>:<none>').join(' ') || '<none>'},
      {key: 'size', label: 'Size', value: i => i.Size, html: i => fmtBytes(i.Size)},
      {key: 'created', label: 'Created', value: i => i.Created, html: i => fmtDate(i.Created), cls: 'hide-sm'},
    ],
    onSelectionChange: sel => $$('#images [data-action]').forEach(b => { b.disabled = sel.size === 0 || (b.dataset.action === 'tag' && sel.size !== 1); }),
  });
  const load = async () => {
    const [images, containers] = await Promise.all([api('GET', `${base}/images/json`), api('GET', `${base}/containers/json?all=1`)]);
    usedBy.clear(); containers.forEach(c => usedBy.set(c.ImageID, true)); table.setRows(images);
  };
  const imageRef = id => { const i = table.rows().find(x => x.Id === id); const tag = i && (i.RepoTags || []).find(t => t !== '<none>:<none>'); return tag || id; };
  $('#images').addEventListener('click', async e => {
    const action = e.target.dataset && e.target.dataset.action; if (!action || e.target.disabled) return;
    const ids = table.selected();
    if (action === 'export') { for (const id of ids) download(`${base}/images/${encodeURIComponent(imageRef(id))}/get`, `${imageRef(id).replace(/[/:]/g, '_')}.tar`); return; }
    if (action === 'tag') {
      const input = $('#tag-name'), m = input.value.trim().match(/^(.+?)(?::([\w][\w.-]*))?$/);
      if (!m) { input.classList.add('invalid'); toast('Enter a tag such as app:v2', true); return; }
      try { await api('POST', `${base}/images/${encodeURIComponent(ids[0])}/tag?repo=${encodeURIComponent(m[1])}&tag=${encodeURIComponent(m[2] || 'latest')}`); toast(`Tagged ${input.value}`); input.value = ''; }
      catch (err) { toast(`Tag: ${err.message}`, true); }
    }
    if (action === 'remove') {
      if (!confirm(`Remove ${ids.length} image(s)?`)) return;
      for (const id of ids) { try { await api('DELETE', `${base}/images/${encodeURIComponent(id)}?force=1`); } catch (err) { toast(`Remove ${shortId(id)}: ${err.message}`, true); } }
    }
    table.clearSelection(); await load();
  });
  const streamInto = async (form, progressEl, method, url, body, headers) => {
    const view = progressView(progressEl);
    await apiStream(method, url, body, jsonLines(m => view.feed(m)), headers);
    if (view.failed()) throw new Error(view.failed());
    await load();
  };
  const registries = await registryChoice(envId, $('#pull-registry'));
  onSubmit($('#pull'), async data => {
    const ref = registries.qualify(data.get('registry'), data.get('image').trim()); const m = ref.match(/^(.+?)(?::([\w][\w.-]*))?(@sha256:[0-9a-f]+)?$/);
    if (!ref || !m) return showError($('#pull'), new Error('Enter an image reference'), 'image');
    const fromImage = m[3] ? m[1] + m[3] : m[1];
    await streamInto($('#pull'), $('#pull-progress'), 'POST', `${base}/images/create?fromImage=${encodeURIComponent(fromImage)}${m[3] ? '' : '&tag=' + encodeURIComponent(m[2] || 'latest')}`,
      undefined, registries.headers(data.get('registry')));
    toast(`Pulled ${ref}`);
  });
  onSubmit($('#build'), async data => {
    const file = data.get('context'); if (!file || !file.size) return showError($('#build'), new Error('Choose a build context archive'), 'context');
    const q = new URLSearchParams({dockerfile: data.get('dockerfile') || 'Dockerfile', rm: '1'}); if (data.get('tag')) q.set('t', data.get('tag'));
    await streamInto($('#build'), $('#build-progress'), 'POST', `${base}/build?${q}`, file, {'Content-Type': 'application/x-tar'});
    toast('Build finished');
  });
  onSubmit($('#import'), async data => {
    const file = data.get('archive'); if (!file || !file.size) return showError($('#import'), new Error('Choose an image archive'), 'archive');
    await streamInto($('#import'), $('#import-progress'), 'POST', `${base}/images/load?quiet=0`, file, {'Content-Type': 'application/x-tar'});
    toast('Images imported');
  });
  await load(); watchEngine(envId, ['image'], load);
}
