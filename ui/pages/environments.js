// Pages: home (every environment), the add/edit environment wizard, and tags.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {$} from '../dom.js';
import {formError, onSubmit, showError, toast} from '../feedback.js';
import {esc, fmtAgo, fmtBytes} from '../format.js';
import {every} from '../lifecycle.js';
import {bindEdgeButtons, EDGE_WIZARD_KIND, edgeInfo} from './edge.js';
import {groupName, UNASSIGNED_GROUP} from './groups.js';
import {motdBanner} from './motd.js';
import {isAdmin, session} from '../session.js';
import {render} from '../shell.js';

const HOME_CARDS = 200; // environment cards drawn at once on the home page

// One environment's card on the home page.
function envCard(ep, tagName, picked) {
  const s = ep.Snapshots[0] || {}; const up = ep.Status === constants.EnvironmentStatus.Up;
  return `<div class="card env" data-env="${ep.Id}">${isAdmin() ? `<input type="checkbox" class="env-pick" value="${ep.Id}" ${picked.has(ep.Id) ? 'checked' : ''} aria-label="Select ${esc(ep.Name)}">` : ''}<div class="info">
    <a class="name" href="#/env/${ep.Id}/dashboard">${esc(ep.Name)}</a>
    <span class="badge ${up ? 'up' : 'down'}">${up ? 'up' : 'down'}</span><span class="badge">${esc(constants.EnvironmentTypeNames[ep.Type] || 'type ' + ep.Type)}</span>
    ${s.Swarm ? '<span class="badge">Swarm</span>' : ''}${(ep.TagIds || []).map(t => `<span class="badge">${esc(tagName(t))}</span>`).join('')}
    <span class="muted small mono">${esc(ep.URL)}</span>
    <div class="muted">${s.DockerVersion ? `Docker ${esc(s.DockerVersion)} · ` : ''}${s.RunningContainerCount ?? 0} running · ${s.StoppedContainerCount ?? 0} stopped ·
    ${s.HealthyContainerCount ?? 0} healthy · ${s.ImageCount ?? 0} images · ${s.VolumeCount ?? 0} volumes ·${s.NetworkCount !== undefined ? ` ${s.NetworkCount} networks ·` : ''} ${s.StackCount ?? 0} stacks ·
    ${s.TotalCPU ?? '?'} CPU · ${fmtBytes(s.TotalMemory)} RAM${s.AgentVersion ? ` · agent ${esc(s.AgentVersion)}` : ''}${s.Time ? ` · snapshot ${fmtAgo(s.Time)}` : ''}</div>
    ${ep.Agent ? `<div class="muted small">Agent TLS certificate SHA-256 <code>${esc(ep.Agent.CertificateFingerprint)}</code></div>` : ''}
    ${isAdmin() ? `<div class="small"><a href="#/env/${ep.Id}/access">Access</a> · <a href="#/env/${ep.Id}/security">Security settings</a></div>` : ''}${edgeInfo(ep)}</div>
    ${isAdmin() ? `<a class="button" href="#/environments/${ep.Id}/edit">Edit</a>` : ''}</div>`;
}
// Home: every environment the caller may use, under its group's name; the group filter is kept in the address (?group=N).
export async function pageHome() {
  session.currentEnv = null;
  const chosenGroup = new URLSearchParams(location.hash.split('?')[1] || '').get('group') || '';
  let [envs, tags, groups, motd] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/tags').catch(() => []),
    api('GET', '/api/endpoint_groups').catch(() => []), api('GET', '/api/motd').catch(() => null)]);
  const groupIds = () => [...new Set([...groups.map(g => g.Id), ...envs.map(ep => ep.GroupId || UNASSIGNED_GROUP)])].sort((a, b) => a - b);
  render('Home', `<div class="toolbar"><h2>Environments</h2><span class="spacer"></span>
    <input class="filter" id="env-search" type="search" placeholder="Search by name, URL, type, tag, group" aria-label="Search environments">
    <select id="env-group" aria-label="Group"><option value="">All groups</option>${groupIds().map(id => `<option value="${id}" ${String(id) === chosenGroup ? 'selected' : ''}>${esc(groupName(groups, id))}</option>`).join('')}</select>
    ${isAdmin() ? `<button class="danger" id="env-remove" disabled>Remove selected</button>
      <a class="button" href="#/groups">Groups</a> <a class="button primary" href="#/environments/new">Add environment</a>` : ''}</div>
    <div class="error" role="alert" id="env-errors"></div><div id="env-list"></div>`);
  motdBanner($('#main'), motd);
  const picked = new Set();
  const tagName = id => (tags.find(t => t.ID === id || t.Id === id) || {}).Name || `tag ${id}`;
  // At most `cardLimit` cards are drawn (a fleet of thousands stays quick to search); "Show more" draws more.
  let cardLimit = HOME_CARDS;
  const draw = () => {
    const q = $('#env-search').value.toLowerCase(), group = +$('#env-group').value;
    const shown = envs.filter(ep => (!group || (ep.GroupId || UNASSIGNED_GROUP) === group) &&
      [ep.Name, ep.URL, constants.EnvironmentTypeNames[ep.Type], groupName(groups, ep.GroupId || UNASSIGNED_GROUP), ...(ep.TagIds || []).map(tagName)].join(' ').toLowerCase().includes(q));
    // Only one group (every environment unassigned): no heading, as before groups existed.
    const headings = groupIds().length > 1 || envs.some(ep => (ep.GroupId || UNASSIGNED_GROUP) !== UNASSIGNED_GROUP);
    let budget = cardLimit;
    $('#env-list').innerHTML = (groupIds().map(id => { const inGroup = shown.filter(ep => (ep.GroupId || UNASSIGNED_GROUP) === id);
      const drawn = inGroup.slice(0, Math.max(budget, 0)); budget -= drawn.length;
      return drawn.length ? `<section class="env-group" data-group="${id}" aria-label="Group ${esc(groupName(groups, id))}">
        ${headings ? `<h3 class="group-name">${esc(groupName(groups, id))} <span class="muted small">${inGroup.length}</span></h3>` : ''}${drawn.map(ep => envCard(ep, tagName, picked)).join('')}</section>` : ''; }).join('')
      || `<p class="empty">${envs.length ? 'No environment matches.' : 'No environment yet.'}</p>`)
      + (shown.length > cardLimit ? `<p class="muted" id="env-more">Showing ${cardLimit} of ${shown.length}: search to narrow them down${isAdmin() ? ', or page through them on <a href="#/edge/devices">Edge devices</a>' : ''}.
        <button type="button" class="show-more">Show ${Math.min(HOME_CARDS, shown.length - cardLimit)} more</button></p>` : '');
  };
  $('#env-search').addEventListener('input', () => { cardLimit = HOME_CARDS; draw(); });
  $('#env-list').addEventListener('click', e => { if (e.target.classList.contains('show-more')) { cardLimit += HOME_CARDS; draw(); } });
  $('#env-group').addEventListener('change', () => { history.replaceState(null, '', $('#env-group').value ? `#/home?group=${$('#env-group').value}` : '#/home'); cardLimit = HOME_CARDS; draw(); });
  draw();
  const remove = $('#env-remove');
  const showPicked = () => { for (const id of [...picked]) if (!envs.some(ep => ep.Id === id)) picked.delete(id);
    if (remove) { remove.disabled = !picked.size; remove.textContent = picked.size ? `Remove ${picked.size} selected` : 'Remove selected'; } };
  $('#env-list').addEventListener('change', e => { if (!e.target.classList.contains('env-pick')) return;
    e.target.checked ? picked.add(+e.target.value) : picked.delete(+e.target.value); showPicked(); });
  // Several at once: DELETE /api/endpoints answers 204, or 207 naming those it could not remove.
  if (remove) remove.addEventListener('click', async () => {
    const names = envs.filter(ep => picked.has(ep.Id)).map(ep => ep.Name);
    if (!confirm(`Remove ${names.length} environment(s) from this server (${names.join(', ')})? Nothing on their engines is touched.`)) return;
    const ids = [...picked], nameOf = id => (envs.find(ep => ep.Id === id) || {}).Name || `environment ${id}`;
    $('#env-errors').textContent = '';
    try {
      const answer = await api('DELETE', '/api/endpoints', {endpoints: ids.map(id => ({id}))});
      const failed = (answer && answer.errors) || [];
      if (failed.length) $('#env-errors').textContent = `Not removed (no longer there): ${failed.map(nameOf).join(', ')}`;
      toast(`${ids.length - failed.length} environment(s) removed`, !!failed.length);
      picked.clear(); await reload();
    } catch (err) { $('#env-errors').textContent = err.message; }
  });
  const reload = async () => { [envs, groups] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/endpoint_groups').catch(() => groups)]); draw(); showPicked(); };
  bindEdgeButtons($('#env-list'), reload);
  every(10000, reload);
}

// What the wizard asks for each kind of environment: {label, fields: html(env), done: (element, env) => ...}.
const DOCKER_WIZARD_KIND = {label: 'Docker API (socket or TCP)',
      fields: env => `<label for="url">Docker API URL</label><input id="url" name="URL" required placeholder="unix:///var/run/docker.sock or tcp://10.0.0.5:2376" value="${esc(env ? env.URL : 'unix:///var/run/docker.sock')}">
        <label class="check"><input type="checkbox" name="TLS" ${env && env.TLSConfig && env.TLSConfig.TLS ? 'checked' : ''}> TLS</label>
        <label class="check"><input type="checkbox" name="TLSSkipVerify" ${env && env.TLSConfig && env.TLSConfig.TLSSkipVerify ? 'checked' : ''}> Skip server certificate verification</label>
        ${env ? '' : `<div class="row"><div><label for="tls-ca">CA certificate</label><input id="tls-ca" type="file" name="TLSCACertFile"></div>
        <div><label for="tls-cert">Client certificate</label><input id="tls-cert" type="file" name="TLSCertFile"></div>
        <div><label for="tls-key">Client key</label><input id="tls-key" type="file" name="TLSKeyFile"></div></div>`}`};
const AGENT_WIZARD_KIND = {label: 'Agent (agent.py on the node)',
      fields: env => `<label for="url">Agent address (host:port, port 9001 by default)</label><input id="url" name="URL" required placeholder="10.0.0.5:9001" value="${esc(env ? env.URL : '')}">
        ${env ? '' : '<label for="secret">Agent secret (only when the agent runs with AGENT_SECRET)</label><input id="secret" name="AgentSecret" type="password" autocomplete="off">'}`,
      done: (el, env) => { el.innerHTML = `<p>Added <a href="#/env/${env.Id}/dashboard">${esc(env.Name)}</a>.</p>` +
        (env.Agent ? `<p>Check that the agent's certificate has this SHA-256 fingerprint; it is trusted from now on:</p><pre class="mono">${esc(env.Agent.CertificateFingerprint)}</pre>` : ''); }};
// The wizard's tabs by environment type (the server's numbers, known once the constants are read).
const wizardKinds = () => { const types = constants.EnvironmentTypes;
  return {[types.Docker]: DOCKER_WIZARD_KIND, [types.Agent]: AGENT_WIZARD_KIND, [types.Edge]: EDGE_WIZARD_KIND}; };
export async function pageEnvironmentForm(envId) {
  session.currentEnv = null;
  const [env, groups] = await Promise.all([envId ? api('GET', `/api/endpoints/${envId}`) : null, api('GET', '/api/endpoint_groups').catch(() => [])]);
  const envGroup = env ? env.GroupId || UNASSIGNED_GROUP : UNASSIGNED_GROUP;
  // The kind the wizard opens with: an agent, as in Portainer.
  const kind = env ? env.Type : Number(new URLSearchParams(location.hash.split('?')[1]).get('type') || constants.EnvironmentTypes.Agent);
  const wizard = wizardKinds(), kinds = Object.entries(wizard);
  render(env ? 'Edit environment' : 'Add environment', `<div class="card"><h2>${env ? 'Edit environment ' + esc(env.Name) : 'Add an environment'}</h2>
    ${env ? '' : `<div class="tabs" role="tablist">${kinds.map(([k, d]) => `<a role="tab" href="#/environments/new?type=${k}" class="${+k === kind ? 'active' : ''}">${esc(d.label)}</a>`).join('')}</div>`}
    <form id="env-form"><label for="n">Name</label><input id="n" name="Name" required value="${esc(env ? env.Name : '')}">
    ${wizard[kind] ? wizard[kind].fields(env) : '<p class="error">This kind of environment cannot be edited here.</p>'}
    <label for="env-group">Group</label><select id="env-group" name="GroupID">${(groups.some(g => g.Id === envGroup) ? groups : [{Id: envGroup, Name: groupName(groups, envGroup)}, ...groups])
      .map(g => `<option value="${g.Id}" ${g.Id === envGroup ? 'selected' : ''}>${esc(g.Name)}</option>`).join('')}</select>
    <label for="env-public">Public URL (used for the links of published ports)</label><input id="env-public" name="PublicURL" value="${esc(env ? env.PublicURL : '')}">
    ${env ? `<label class="check"><input type="checkbox" name="EnableImageNotification" ${env.EnableImageNotification ? 'checked' : ''}> Check for image updates (asks each running image's registry for its tag's digest)</label>
      <p class="muted small" id="env-image-registries">Registries it will contact: …</p>` : ''}
    ${env ? `<p><a href="#/env/${env.Id}/access">Who has access</a> · <a href="#/env/${env.Id}/security">What standard users may do (security settings)</a></p>` : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">${env ? 'Save' : 'Connect'}</button>
    ${env ? '<button type="button" class="danger" id="env-delete">Remove environment</button>' : ''} <a href="#/home">Cancel</a></p></form><div id="env-done"></div></div>`,
    `<a href="#/home">Home</a> / ${env ? 'Edit environment' : 'Add environment'}`);
  const form = $('#env-form'); $('#n').focus();
  if (env) api('GET', `/api/endpoints/${env.Id}/image_notification`).then(s => { $('#env-image-registries').textContent = s.Registries === null
    ? 'Registries it will contact: unknown (the engine did not answer).' : `Registries it will contact: ${s.Registries.join(', ') || 'none (no running container was pulled from a registry)'}`; }).catch(() => {});
  onSubmit(form, async data => {
    if (env) {
      const body = {Name: data.get('Name'), PublicURL: data.get('PublicURL'), EnableImageNotification: !!data.get('EnableImageNotification'), GroupID: +data.get('GroupID')};
      if (data.has('URL')) Object.assign(body, {URL: data.get('URL'), TLS: !!data.get('TLS'), TLSSkipVerify: !!data.get('TLSSkipVerify')});
      await api('PUT', `/api/endpoints/${env.Id}`, body); toast('Environment saved'); location.hash = '#/home'; return;
    }
    const body = new FormData(); body.set('EndpointCreationType', String(kind));
    for (const [k, v] of data.entries()) { if (v instanceof File && !v.size) continue; body.set(k, v instanceof File ? v : (v === 'on' ? 'true' : v)); }
    const created = await api('POST', '/api/endpoints', body);
    const after = wizard[kind].done;
    if (after) after($('#env-done'), created); else { toast(`Environment ${created.Name} added`); location.hash = `#/env/${created.Id}/dashboard`; }
  });
  if (env && env.Type === constants.EnvironmentTypes.Edge) bindEdgeButtons(form, () => pageEnvironmentForm(env.Id));
  const del = $('#env-delete');
  if (del) del.addEventListener('click', async () => { if (!confirm(`Remove environment ${env.Name} from this server? Nothing on the engine is touched.`)) return;
    try { await api('DELETE', `/api/endpoints/${env.Id}`); toast('Environment removed'); location.hash = '#/home'; } catch (err) { showError(form, err); } });
}
export async function pageTags() {
  const [tags, envs] = await Promise.all([api('GET', '/api/tags'), api('GET', '/api/endpoints')]);
  const main = render('Tags', `<div class="card"><h2>Tags</h2>
    <p class="muted">Tags label environments; dynamic edge groups pick their environments by tag.</p>
    <table><thead><tr><th>Tag</th><th>Environments</th><th></th></tr></thead><tbody>
    ${tags.map(t => `<tr><td><span class="badge">${esc(t.Name)}</span></td><td>${envs.map(ep => `<label class="inline">
      <input type="checkbox" data-tag="${t.ID}" data-env="${ep.Id}" ${(ep.TagIds || []).includes(t.ID) ? 'checked' : ''}> ${esc(ep.Name)}</label>`).join(' ')}</td>
      <td><button class="danger" data-del="${t.ID}">Remove</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">No tags yet.</td></tr>'}
    </tbody></table><form id="f"><label for="tag-name">New tag</label><input id="tag-name" required maxlength="128">
    <div class="error" role="alert"></div><button class="primary">Add tag</button></form></div>`);
  const f = main.querySelector('#f');
  f.onsubmit = async e => { e.preventDefault();
    try { await api('POST', '/api/tags', {Name: f.querySelector('#tag-name').value}); pageTags(); } catch (err) { formError(f, err); } };
  main.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/tags/${b.dataset.del}`); pageTags(); });
  main.querySelectorAll('[data-tag]').forEach(box => box.onchange = async () => {
    const ep = envs.find(x => x.Id === +box.dataset.env), tag = +box.dataset.tag;
    ep.TagIds = box.checked ? [...new Set([...(ep.TagIds || []), tag])] : (ep.TagIds || []).filter(x => x !== tag);
    try { await api('PUT', `/api/endpoints/${ep.Id}`, {TagIds: ep.TagIds}); toast('Saved'); } catch (err) { toast(err.message); box.checked = !box.checked; } });
}
