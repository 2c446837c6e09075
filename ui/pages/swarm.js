// Pages: the lists of a Swarm's services (with their webhooks), nodes, configs and secrets; each links to its page.
import {api} from '../api.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {toast} from '../feedback.js';
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
const SWARM_CREATE = {services: 'Create service', configs: 'Create config', secrets: 'Create secret'};
// A service's webhook: POST <origin>/api/webhooks/<Token> redeploys it (pulling its image again).
const webhookUrl = hook => `${location.origin}/api/webhooks/${hook.Token}`;
const webhookQuery = filters => `/api/webhooks?filters=${encodeURIComponent(JSON.stringify(filters))}`;
function webhookCell(service, hook) {
  const name = service.Spec.Name;
  return `<label class="check"><input type="checkbox" data-webhook="${esc(service.ID)}" ${hook ? 'checked' : ''} aria-label="Webhook of ${esc(name)}"> webhook</label>
    ${hook ? `<code class="small webhook-url" id="webhook-${esc(service.ID)}">${esc(webhookUrl(hook))}</code>
      <button type="button" class="small" data-copy-webhook="${esc(service.ID)}" aria-label="Copy the webhook URL of ${esc(name)}">Copy</button>` : ''}`;
}
export async function pageSwarm(envId, kind) {
  const view = SWARM_VIEWS[kind];
  const create = SWARM_CREATE[kind] ? `<span class="spacer"></span><a class="button primary" href="#/env/${envId}/${kind}/new">${SWARM_CREATE[kind]}</a>` : '';
  render(view.title, `<div class="toolbar"><h2>${view.title}</h2>${create}</div><div class="card" id="swarm-list"></div><div class="error" role="alert" id="swarm-error"></div>`, envCrumbs(envId, view.title));
  const services = kind === 'services';
  let hooks = []; // the webhooks of this environment the caller may see: {Id, Token, ResourceId, EndpointId}
  const hookOf = service => hooks.find(h => h.ResourceId === service.ID);
  // The first column links to the item's own page.
  const [first, ...rest] = view.columns;
  const linked = [{...first, html: x => `<a href="#/env/${envId}/${kind}/${esc(x.ID)}">${esc(first.value(x))}</a>`}, ...rest];
  const columns = services ? [...linked, {key: 'webhook', label: 'Webhook', value: s => (hookOf(s) ? 'on' : 'off'), html: s => webhookCell(s, hookOf(s))}] : linked;
  const table = dataTable($('#swarm-list'), {id: x => x.ID, columns, filterPlaceholder: `Filter ${kind}`, empty: `No ${kind}.`});
  const load = async () => {
    const [rows, found] = await Promise.all([api('GET', `${dockerBase(envId)}/${view.path}`), services ? api('GET', webhookQuery({EndpointID: +envId})).catch(() => hooks) : []]);
    hooks = found; table.setRows(rows);
  };
  if (services) $('#swarm-list').addEventListener('click', async e => {
    const copy = e.target.closest('[data-copy-webhook]'); if (!copy) return;
    const text = $(`#webhook-${CSS.escape(copy.dataset.copyWebhook)}`).textContent;
    try { await navigator.clipboard.writeText(text); copy.textContent = 'Copied'; }
    catch (err) { const range = document.createRange(); range.selectNodeContents($(`#webhook-${CSS.escape(copy.dataset.copyWebhook)}`));
      getSelection().removeAllRanges(); getSelection().addRange(range); copy.textContent = 'Selected: press Ctrl+C'; }
  });
  if (services) $('#swarm-list').addEventListener('change', async e => {
    const box = e.target.closest('[data-webhook]'); if (!box) return;
    const serviceId = box.dataset.webhook; $('#swarm-error').textContent = ''; box.disabled = true;
    try {
      if (box.checked) {
        await api('POST', '/api/webhooks', {ResourceID: serviceId, EndpointID: +envId, WebhookType: 1}).catch(async err => {
          if (err.status !== 409) throw err; // made meanwhile (another tab, another user): show that one
          if (!(await api('GET', webhookQuery({ResourceID: serviceId, EndpointID: +envId}))).length) throw err; });
        toast('Webhook created');
      } else {
        const [hook] = await api('GET', webhookQuery({ResourceID: serviceId, EndpointID: +envId}));
        if (hook) await api('DELETE', `/api/webhooks/${hook.Id}`);
        toast('Webhook removed');
      }
    } catch (err) { $('#swarm-error').textContent = err.message; }
    await load();
  });
  await load(); every(10000, load);
}
