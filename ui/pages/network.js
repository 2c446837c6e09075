// Page: one network: its settings, the containers connected to it; connect and disconnect containers.
import {api} from '../api.js';
import {dockerBase} from '../docker.js';
import {$, $$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {containerName, esc, fmtDate} from '../format.js';
import {envCrumbs, render} from '../shell.js';

export async function pageNetwork(envId, networkId) {
  const base = dockerBase(envId);
  const [network, containers] = await Promise.all([api('GET', `${base}/networks/${encodeURIComponent(networkId)}`),
    api('GET', `${base}/containers/json?all=1`)]);
  const connected = Object.entries(network.Containers || {});
  const isConnected = c => connected.some(([id]) => id === c.Id) || Object.values((c.NetworkSettings || {}).Networks || {}).some(n => n.NetworkID === network.Id);
  const candidates = containers.filter(c => !isConnected(c));
  const nameOf = id => { const c = containers.find(x => x.Id === id); return c ? containerName(c) : ''; };
  const ipam = (network.IPAM || {}).Config || [];
  render(`Network ${network.Name}`, `<div class="toolbar"><h2>Network ${esc(network.Name)}</h2></div>
    <div class="grid2"><div class="card"><h3>Settings</h3><dl class="kv"><dt>ID</dt><dd class="mono">${esc(network.Id)}</dd>
    <dt>Driver</dt><dd>${esc(network.Driver)}</dd><dt>Scope</dt><dd>${esc(network.Scope)}</dd><dt>Created</dt><dd>${fmtDate(network.Created)}</dd>
    <dt>Subnets</dt><dd class="mono">${ipam.map(c => esc(`${c.Subnet || ''}${c.Gateway ? ' via ' + c.Gateway : ''}${c.IPRange ? ' range ' + c.IPRange : ''}`)).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Internal</dt><dd>${network.Internal ? 'yes' : 'no'}</dd><dt>Attachable</dt><dd>${network.Attachable ? 'yes' : 'no'}</dd><dt>IPv6</dt><dd>${network.EnableIPv6 ? 'yes' : 'no'}</dd>
    <dt>Options</dt><dd class="mono small">${Object.entries(network.Options || {}).map(([k, v]) => esc(`${k}=${v}`)).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Labels</dt><dd class="mono small">${Object.entries(network.Labels || {}).map(([k, v]) => esc(`${k}=${v}`)).join('<br>') || '<span class="muted">none</span>'}</dd></dl></div>
    <div class="card"><h3>Connected containers</h3><div class="table-wrap"><table id="network-containers"><thead><tr><th>Container</th><th>IPv4</th><th class="hide-sm">MAC</th><th></th></tr></thead><tbody>
    ${connected.map(([id, c]) => `<tr data-id="${esc(id)}"><td><a href="#/env/${envId}/containers/${esc(id)}">${esc(c.Name || nameOf(id) || id.slice(0, 12))}</a></td>
      <td class="mono small">${esc(c.IPv4Address)}</td><td class="hide-sm mono small">${esc(c.MacAddress)}</td>
      <td><button class="danger small" data-disconnect="${esc(id)}">Disconnect</button></td></tr>`).join('') || '<tr><td colspan="4" class="muted">No container is connected.</td></tr>'}</tbody></table></div>
    <form id="network-connect"><h3>Connect a container</h3><div class="row"><div><label for="connect-container">Container</label>
    <select id="connect-container" name="Container">${candidates.map(c => `<option value="${esc(c.Id)}">${esc(containerName(c))}</option>`).join('')}</select></div>
    <div><label for="connect-ip">IPv4 address (optional)</label><input id="connect-ip" name="ip" placeholder="from the subnet" data-error-hint="address|IP"></div></div>
    <div class="error" role="alert"></div><button type="submit" class="primary" ${candidates.length ? '' : 'disabled'}>Connect</button></form></div></div>`,
  envCrumbs(envId, `<a href="#/env/${envId}/networks">Networks</a>`, esc(network.Name)));
  $$('[data-disconnect]').forEach(b => b.addEventListener('click', async () => {
    const id = b.dataset.disconnect;
    if (!confirm(`Disconnect ${nameOf(id) || id.slice(0, 12)} from ${network.Name}?`)) return;
    try { await api('POST', `${base}/networks/${encodeURIComponent(network.Id)}/disconnect`, {Container: id, Force: false});
      toast(`Disconnected ${nameOf(id) || id.slice(0, 12)}`); await pageNetwork(envId, network.Id); }
    catch (err) { toast(`Disconnect: ${err.message}`, true); }
  }));
  onSubmit($('#network-connect'), async data => {
    const ip = data.get('ip').trim();
    await api('POST', `${base}/networks/${encodeURIComponent(network.Id)}/connect`,
      {Container: data.get('Container'), ...(ip ? {EndpointConfig: {IPAMConfig: {IPv4Address: ip}}} : {})});
    toast(`Connected ${nameOf(data.get('Container'))}`); await pageNetwork(envId, network.Id);
  });
}
