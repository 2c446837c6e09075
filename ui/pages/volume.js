// Page: one volume: its settings, the containers that mount it, and (on agent environments) its files.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {toast} from '../feedback.js';
import {containerName, esc, fmtDate} from '../format.js';
import {session} from '../session.js';
import {envCrumbs, render} from '../shell.js';

export async function pageVolume(envId, volumeName) {
  const base = dockerBase(envId);
  const [volume, containers] = await Promise.all([api('GET', `${base}/volumes/${encodeURIComponent(volumeName)}`),
    api('GET', `${base}/containers/json?all=1&filters=${encodeURIComponent(JSON.stringify({volume: [volumeName]}))}`)]);
  const node = (volume.Portainer && volume.Portainer.Agent && volume.Portainer.Agent.NodeName) || '';
  const env = session.currentEnv, types = constants.EnvironmentTypes || {};
  const browsable = env && (env.Type === types.Agent || env.Type === types.Edge);
  const mountOf = c => (c.Mounts || []).find(m => m.Name === volume.Name) || {};
  render(`Volume ${volume.Name}`, `<div class="toolbar"><h2 class="flat">Volume <span class="mono">${esc(volume.Name)}</span></h2><span class="spacer"></span>
    ${browsable ? `<a class="button" href="#/env/${envId}/volumes/${encodeURIComponent(volume.Name)}/browse?node=${encodeURIComponent(node)}">Browse files</a>` : ''}
    <button class="danger" id="volume-remove">Remove</button></div>
    <div class="grid2"><div class="card"><h3>Settings</h3><dl class="kv"><dt>Driver</dt><dd>${esc(volume.Driver)}</dd><dt>Scope</dt><dd>${esc(volume.Scope)}</dd>
    <dt>Mount point</dt><dd class="mono small">${esc(volume.Mountpoint)}</dd><dt>Created</dt><dd>${fmtDate(volume.CreatedAt)}</dd>
    ${node ? `<dt>Node</dt><dd>${esc(node)}</dd>` : ''}
    <dt>Driver options</dt><dd class="mono small">${Object.entries(volume.Options || {}).map(([k, v]) => esc(`${k}=${v}`)).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Labels</dt><dd class="mono small">${Object.entries(volume.Labels || {}).map(([k, v]) => esc(`${k}=${v}`)).join('<br>') || '<span class="muted">none</span>'}</dd></dl>
    ${browsable ? '' : '<p class="muted small">Browsing a volume\'s files needs an agent environment.</p>'}</div>
    <div class="card"><h3>Used by</h3><div class="table-wrap"><table id="volume-users"><thead><tr><th>Container</th><th>Mounted at</th><th>Access</th></tr></thead><tbody>
    ${containers.map(c => `<tr><td><a href="#/env/${envId}/containers/${esc(c.Id)}">${esc(containerName(c))}</a> <span class="muted small">${esc(c.State)}</span></td>
      <td class="mono small">${esc(mountOf(c).Destination)}</td><td>${mountOf(c).RW === false ? 'read-only' : 'read-write'}</td></tr>`).join('') || '<tr><td colspan="3" class="muted">No container uses it.</td></tr>'}
    </tbody></table></div></div></div>`, envCrumbs(envId, `<a href="#/env/${envId}/volumes">Volumes</a>`, esc(volume.Name)));
  $('#volume-remove').addEventListener('click', async () => {
    if (!confirm(`Remove volume ${volume.Name} and its data?`)) return;
    try { await api('DELETE', `${base}/volumes/${encodeURIComponent(volume.Name)}`); toast(`Volume ${volume.Name} removed`); location.hash = `#/env/${envId}/volumes`; }
    catch (err) { toast(`Remove: ${err.message}`, true); }
  });
}
