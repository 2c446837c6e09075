// Page: the networks of an environment.
import {api} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';

export async function pageNetworks(envId) {
  const base = dockerBase(envId);
  render('Networks', `<div class="toolbar"><h2>Networks</h2></div>
    <form class="card" id="network-create"><h3>Create a network</h3><div class="row"><div><label for="n-name">Name</label><input id="n-name" name="Name" required></div>
    <div><label for="n-driver">Driver</label><select id="n-driver" name="Driver"><option>bridge</option><option>overlay</option><option>macvlan</option><option>ipvlan</option></select></div>
    <div><label for="n-subnet">Subnet</label><input id="n-subnet" name="Subnet" placeholder="e.g. 172.30.0.0/16" data-error-hint="subnet|pool|overlap"></div>
    <div><label for="n-gateway">Gateway</label><input id="n-gateway" name="Gateway" placeholder="e.g. 172.30.0.1" data-error-hint="gateway"></div></div>
    <div class="row"><label class="check narrow"><input type="checkbox" name="Internal"> Internal (no outside access)</label><label class="check narrow"><input type="checkbox" name="Attachable"> Attachable</label></div>
    <div class="error" role="alert"></div><button class="primary" type="submit">Create the network</button></form><div class="card" id="networks"></div>`, envCrumbs(envId, 'Networks'));
  const builtin = new Set(['bridge', 'host', 'none', 'ingress', 'docker_gwbridge']);
  const table = dataTable($('#networks'), {
    id: n => n.Id, selectable: true, filterPlaceholder: 'Filter networks', empty: 'No networks.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'name', label: 'Name', value: n => n.Name, html: n => `<a href="#/env/${envId}/networks/${encodeURIComponent(n.Id)}">${esc(n.Name)}</a>`}, {key: 'driver', label: 'Driver', value: n => n.Driver}, {key: 'scope', label: 'Scope', value: n => n.Scope, cls: 'hide-sm'},
      {key: 'subnet', label: 'Subnet', value: n => ((n.IPAM || {}).Config || []).map(c => c.Subnet).join(' '), cls: 'mono small'},
      {key: 'gateway', label: 'Gateway', value: n => ((n.IPAM || {}).Config || []).map(c => c.Gateway || '').join(' '), cls: 'hide-sm mono small'},
      {key: 'flags', label: '', value: n => [n.Internal && 'internal', n.Attachable && 'attachable', builtin.has(n.Name) && 'system'].filter(Boolean).join(' ')}],
    onSelectionChange: sel => { $('#networks [data-action]').disabled = sel.size === 0; },
  });
  const load = async () => table.setRows(await api('GET', `${base}/networks`));
  $('#networks').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    for (const id of table.selected()) { try { await api('DELETE', `${base}/networks/${id}`); } catch (err) { toast(`Remove: ${err.message}`, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#network-create'), async data => {
    const ipam = data.get('Subnet') ? {Driver: 'default', Config: [{Subnet: data.get('Subnet'), ...(data.get('Gateway') ? {Gateway: data.get('Gateway')} : {})}]} : undefined;
    await api('POST', `${base}/networks/create`, {Name: data.get('Name').trim(), Driver: data.get('Driver'), Internal: !!data.get('Internal'), Attachable: !!data.get('Attachable'), IPAM: ipam, CheckDuplicate: true});
    toast(`Network ${data.get('Name')} created`); $('#network-create').reset(); await load();
  });
  await load(); watchEngine(envId, ['network'], load);
}
