// Page: one environment's dashboard.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {esc, fmtBytes} from '../format.js';
import {every} from '../lifecycle.js';
import {envIsSwarm, session} from '../session.js';
import {ENV_NAV, envCrumbs, render} from '../shell.js';

export async function pageDashboard(envId) {
  const base = dockerBase(envId);
  render('Dashboard', `<div class="toolbar"><h2>${esc(session.currentEnv.Name)}</h2><span class="badge ${session.currentEnv.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}">${session.currentEnv.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}</span></div>
    <div id="dash"><p class="muted">Loading…</p></div>`, envCrumbs(envId, 'Dashboard'));
  const draw = async () => {
    const [info, version, containers, images, volumes, networks] = await Promise.all([api('GET', `${base}/info`), api('GET', `${base}/version`),
      api('GET', `${base}/containers/json?all=1`), api('GET', `${base}/images/json`), api('GET', `${base}/volumes`), api('GET', `${base}/networks`)]);
    const running = containers.filter(c => c.State === 'running').length;
    const stacks = new Set(containers.map(c => (c.Labels || {})['com.docker.compose.project']).filter(Boolean));
    const tile = (href, n, label, detail = '') => `<a class="card tile" href="${href}"><div class="stat">${n}</div><div>${label}</div><div class="muted small">${detail}</div></a>`;
    $('#dash').innerHTML = `<div class="grid">
      ${tile(`#/env/${envId}/containers`, containers.length, 'Containers', `<span class="running">${running} running</span> · <span class="exited">${containers.length - running} stopped</span>`)}
      ${tile(`#/env/${envId}/images`, images.length, 'Images', fmtBytes(images.reduce((a, i) => a + (i.Size || 0), 0)))}
      ${tile(`#/env/${envId}/volumes`, (volumes.Volumes || []).length, 'Volumes')}
      ${tile(`#/env/${envId}/networks`, networks.length, 'Networks')}
      ${tile(ENV_NAV.some(n => n.path === 'stacks') ? `#/env/${envId}/stacks` : `#/env/${envId}/containers`, stacks.size, 'Stacks', 'compose projects')}
      ${envIsSwarm(session.currentEnv) ? tile(`#/env/${envId}/services`, '', 'Swarm', `${info.Swarm.Nodes} nodes · ${info.Swarm.Managers} managers`) : ''}</div>
      <div class="card"><h3>Engine</h3><dl class="kv"><dt>Name</dt><dd>${esc(info.Name)}</dd><dt>Docker</dt><dd>${esc(version.Version)} (API ${esc(version.ApiVersion)})</dd>
      <dt>OS</dt><dd>${esc(info.OperatingSystem)} · ${esc(info.KernelVersion)} · ${esc(info.Architecture)}</dd><dt>CPU / memory</dt><dd>${info.NCPU} · ${fmtBytes(info.MemTotal)}</dd>
      <dt>Storage driver</dt><dd>${esc(info.Driver)}</dd><dt>Root directory</dt><dd class="mono">${esc(info.DockerRootDir)}</dd>
      <dt>Swarm</dt><dd>${esc((info.Swarm || {}).LocalNodeState || 'inactive')}${info.Swarm && info.Swarm.ControlAvailable ? ' (manager)' : ''}</dd>
      <dt>URL</dt><dd class="mono">${esc(session.currentEnv.URL)}</dd></dl></div>`;
  };
  await draw(); every(10000, draw);
}
