// Page: one image: its settings, tags, layers and history, the containers made from it; tag, push, remove.
import {api, apiStream} from '../api.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, showError, toast} from '../feedback.js';
import {containerName, esc, fmtBytes, fmtDate, shortId} from '../format.js';
import {registryChoice} from './registries.js';
import {envCrumbs, render} from '../shell.js';
import {jsonLines} from '../streams.js';
import {progressView} from '../widgets.js';

const realTags = image => (image.RepoTags || []).filter(t => t !== '<none>:<none>');
// [host[:port]/]name[/name...][:tag], Docker's reference grammar: names are lower case; checked before the engine is asked.
const NAME_PART = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const IMAGE_REFERENCE = new RegExp(`^((?:[a-zA-Z0-9.-]+(?::\\d+)?/)?${NAME_PART}(?:/${NAME_PART})*)(?::([\\w][\\w.-]{0,127}))?$`);

export async function pageImage(envId, imageId) {
  const base = dockerBase(envId);
  const image = await api('GET', `${base}/images/${encodeURIComponent(imageId)}/json`);
  const [history, containers] = await Promise.all([api('GET', `${base}/images/${encodeURIComponent(image.Id)}/history`).catch(() => []),
    api('GET', `${base}/containers/json?all=1`)]);
  const users = containers.filter(c => c.ImageID === image.Id), tags = realTags(image), cfg = image.Config || {};
  const title = tags[0] || shortId(image.Id);
  render(`Image ${title}`, `<div class="toolbar"><h2 class="flat">Image ${esc(title)}</h2><span class="spacer"></span>
    <button class="danger" id="image-remove">Remove</button></div>
    <div class="grid2"><div class="card"><h3>Settings</h3><dl class="kv"><dt>ID</dt><dd class="mono">${esc(image.Id)}</dd>
    <dt>Size</dt><dd>${fmtBytes(image.Size)}</dd><dt>Created</dt><dd>${fmtDate(image.Created)}</dd>
    <dt>Platform</dt><dd>${esc([image.Os, image.Architecture, image.Variant].filter(Boolean).join('/'))}</dd>
    <dt>Command</dt><dd class="mono">${esc([...(cfg.Entrypoint || []), ...(cfg.Cmd || [])].join(' '))}</dd>
    <dt>Ports</dt><dd>${esc(Object.keys(cfg.ExposedPorts || {}).join(', ')) || '<span class="muted">none</span>'}</dd>
    <dt>Environment</dt><dd class="mono small">${(cfg.Env || []).map(esc).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Labels</dt><dd class="mono small">${Object.entries(cfg.Labels || {}).map(([k, v]) => esc(`${k}=${v}`)).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Digests</dt><dd class="mono small">${(image.RepoDigests || []).map(esc).join('<br>') || '<span class="muted">none</span>'}</dd></dl></div>
    <div class="card"><h3>Tags</h3><ul id="image-tags">${tags.map(t => `<li class="mono">${esc(t)}</li>`).join('') || '<li class="muted">untagged</li>'}</ul>
    <form id="image-tag" class="toolbar"><input name="tag" class="filter" placeholder="new tag, e.g. app:v2" aria-label="New tag" data-error-hint="tag|reference|repository">
    <button type="submit">Tag</button><div class="error" role="alert"></div></form>
    <form id="image-push"><h3>Push to a registry</h3><div class="row"><div><label for="push-tag">Tag</label><select id="push-tag" name="tag">${tags.map(t => `<option>${esc(t)}</option>`).join('')}</select></div>
    <div><label for="push-registry">Registry credentials</label><select id="push-registry" name="registry"><option value="">none (a public or local registry)</option></select></div></div>
    <div class="error" role="alert"></div><button type="submit" ${tags.length ? '' : 'disabled'}>Push</button><div id="push-progress"></div></form>
    <h3>Used by</h3><ul id="image-users">${users.map(c => `<li><a href="#/env/${envId}/containers/${esc(c.Id)}">${esc(containerName(c))}</a> <span class="muted small">${esc(c.State)}</span></li>`).join('') || '<li class="muted">no container</li>'}</ul></div></div>
    <div class="card"><h3>Layers and history</h3><div class="table-wrap"><table id="image-history"><thead><tr><th>Created</th><th>Size</th><th>Created by</th></tr></thead><tbody>
    ${history.map(h => `<tr><td class="small">${fmtDate(h.Created)}</td><td>${fmtBytes(h.Size)}</td><td class="mono small">${esc((h.CreatedBy || '').replace(/^\/bin\/sh -c #\(nop\) /, ''))}</td></tr>`).join('')}</tbody></table></div>
    <p class="muted small">${(image.RootFS && image.RootFS.Layers || []).length} layers: ${(image.RootFS && image.RootFS.Layers || []).map(l => esc(shortId(l))).join(' ')}</p></div>`,
  envCrumbs(envId, `<a href="#/env/${envId}/images">Images</a>`, esc(title)));
  $('#image-remove').addEventListener('click', async () => {
    if (!confirm(`Remove image ${title}${users.length ? ` (used by ${users.length} container(s))` : ''}?`)) return;
    try { await api('DELETE', `${base}/images/${encodeURIComponent(image.Id)}`); toast(`Image ${title} removed`); location.hash = `#/env/${envId}/images`; }
    catch (err) { toast(`Remove: ${err.message}`, true); }
  });
  onSubmit($('#image-tag'), async data => {
    const m = data.get('tag').trim().match(IMAGE_REFERENCE);
    if (!data.get('tag').trim() || !m) return showError($('#image-tag'), new Error('Enter a tag such as app:v2'), 'tag');
    await api('POST', `${base}/images/${encodeURIComponent(image.Id)}/tag?repo=${encodeURIComponent(m[1])}&tag=${encodeURIComponent(m[2] || 'latest')}`);
    toast(`Tagged ${m[1]}:${m[2] || 'latest'}`); await pageImage(envId, image.Id);
  });
  const registries = await registryChoice(envId, $('#push-registry'));
  onSubmit($('#image-push'), async data => {
    const m = data.get('tag').match(IMAGE_REFERENCE), view = progressView($('#push-progress'));
    await apiStream('POST', `${base}/images/${encodeURIComponent(m[1])}/push?tag=${encodeURIComponent(m[2] || 'latest')}`, undefined,
      jsonLines(line => view.feed(line)), {'X-Registry-Auth': btoa(JSON.stringify({})), ...registries.headers(data.get('registry'))});
    if (view.failed()) throw new Error(view.failed());
    toast(`Pushed ${data.get('tag')}`);
  });
}
