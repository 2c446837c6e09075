// Image updates: badges that tell whether a running container's image has a newer version, and recreate.
import {api} from './api.js';
import {constants} from './constants.js';
import {$, $$} from './dom.js';
import {toast} from './feedback.js';
import {esc} from './format.js';

// The stack view's image updates: a badge per running container, recreate buttons for the outdated ones.
export async function stackImageUpdates(stack, reload) {
  const box = $('#stack-updates'); if (!box) return;
  const labels = constants.ImageUpdateStatusNames;
  let answer;
  try { answer = await api('GET', `/api/stacks/${stack.Id}/images_status`); } catch (e) { box.textContent = e.message; return; }
  const entries = Object.entries(answer.Containers);
  box.innerHTML = entries.length ? `<p>Images: <span class="badge ${esc(answer.Status)}">${labels[answer.Status]}</span> ` +
    entries.map(([id, s]) => `<span class="badge ${esc(s.Status)}" title="${esc(s.Message)}">${esc(s.Name)}: ${labels[s.Status] || 'unknown'}</span>` +
      (s.Status === constants.ImageUpdateStatus.Outdated ? `<button type="button" class="small" data-recreate="${esc(id)}">Recreate with new image</button> ` : '')).join('') + '</p>' : '';
  $$('[data-recreate]', box).forEach(b => b.onclick = async () => { b.disabled = true; b.textContent = 'Recreating…';
    try { await api('POST', `/api/docker/${stack.EndpointId}/containers/${b.dataset.recreate}/recreate`, {PullImage: true}); toast('Recreated with the new image'); reload(); }
    catch (err) { toast(err.message, true); b.disabled = false; b.textContent = 'Recreate with new image'; } });
}
// The "Image update" column of a containers table: a badge per running container, and a recreate button.
export function imageUpdates(envId, redraw, reload) {
  const labels = constants.ImageUpdateStatusNames;
  const state = {statuses: {}};
  state.value = c => (state.statuses[c.Id] || {}).Status || '';
  state.cell = c => { if (c.State !== 'running') return '';
    const s = state.statuses[c.Id]; if (!s) return '<span class="muted small">checking…</span>';
    return `<span class="badge ${esc(s.Status)}" title="${esc(s.Message)}">${labels[s.Status] || 'unknown'}</span>` +
      (s.Status === constants.ImageUpdateStatus.Outdated ? ` <button class="small" data-recreate="${esc(c.Id)}">Recreate with new image</button>` : ''); };
  state.load = async refresh => {
    try { state.statuses = await api('GET', `/api/endpoints/${envId}/image_status${refresh ? '?refresh=true' : ''}`); }
    catch (e) { toast(e.message, true); }
    redraw(); };
  state.missing = rows => rows.some(c => c.State === 'running' && !state.statuses[c.Id]);
  state.bind = el => el.addEventListener('click', async e => {
    const b = e.target.closest('[data-recreate]'); if (!b) return;
    b.disabled = true; b.textContent = 'Recreating…';
    try { await api('POST', `/api/docker/${envId}/containers/${b.dataset.recreate}/recreate`, {PullImage: true}); toast('Recreated with the new image'); }
    catch (err) { toast(err.message, true); }
    await reload(); });
  return state;
}
