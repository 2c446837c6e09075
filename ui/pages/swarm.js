// Pages: read views of a Swarm's services, nodes, configs and secrets.
import {api} from '../api.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {esc, fmtDate} from '../format.js';
import {every} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';

const SWARM_VIEWS = {
  services: {title: 'Services', columns: [{key: 'name', label: 'Name', value: s => s.Spec.Name}, {key: 'image', label: 'Image', value: s => ((s.Spec.TaskTemplate.ContainerSpec || {}).Image || '').split('@')[0]},
    {key: 'mode', label: 'Mode', value: s => s.Spec.Mode.Replicated ? `replicated ${s.Spec.Mode.Replicated.Replicas}` : 'global'},
    {key: 'running', label: 'Running', value: s => s.ServiceStatus ? `${s.ServiceStatus.RunningTasks} / ${s.ServiceStatus.DesiredTasks}` : ''},
    {key: 'ports', label: 'Ports', value: s => ((s.Endpoint || {}).Ports || []).map(p => `${p.PublishedPort}:${p.TargetPort}`).join(' ')},
    {key: 'updated', label: 'Updated', value: s => s.UpdatedAt, html: s => fmtDate(s.UpdatedAt), cls: 'hide-sm'}], path: 'services?status=true'},
  nodes: {title: 'Nodes', columns: [{key: 'host', label: 'Host name', value: n => n.Description.Hostname}, {key: 'role', label: 'Role', value: n => n.Spec.Role + (n.ManagerStatus && n.ManagerStatus.Leader ? ' (leader)' : '')},
    {key: 'availability', label: 'Availability', value: n => n.Spec.Availability}, {key: 'status', label: 'Status', value: n => n.Status.State, html: n => `<span class="${n.Status.State === 'ready' ? 'up' : 'down'}">${esc(n.Status.State)}</span>`},
    {key: 'engine', label: 'Engine', value: n => n.Description.Engine.EngineVersion, cls: 'hide-sm'}, {key: 'addr', label: 'Address', value: n => n.Status.Addr, cls: 'hide-sm'}], path: 'nodes'},
  configs: {title: 'Configs', columns: [{key: 'name', label: 'Name', value: c => c.Spec.Name}, {key: 'created', label: 'Created', value: c => c.CreatedAt, html: c => fmtDate(c.CreatedAt)},
    {key: 'updated', label: 'Updated', value: c => c.UpdatedAt, html: c => fmtDate(c.UpdatedAt), cls: 'hide-sm'}], path: 'configs'},
  secrets: {title: 'Secrets', columns: [{key: 'name', label: 'Name', value: c => c.Spec.Name}, {key: 'created', label: 'Created', value: c => c.CreatedAt, html: c => fmtDate(c.CreatedAt)},
    {key: 'updated', label: 'Updated', value: c => c.UpdatedAt, html: c => fmtDate(c.UpdatedAt), cls: 'hide-sm'}], path: 'secrets'},
};
export async function pageSwarm(envId, kind) {
  const view = SWARM_VIEWS[kind];
  render(view.title, `<div class="toolbar"><h2>${view.title}</h2></div><div class="card" id="swarm-list"></div>`, envCrumbs(envId, view.title));
  const table = dataTable($('#swarm-list'), {id: x => x.ID, columns: view.columns, filterPlaceholder: `Filter ${kind}`, empty: `No ${kind}.`});
  const load = async () => table.setRows(await api('GET', `${dockerBase(envId)}/${view.path}`));
  await load(); every(10000, load);
}
