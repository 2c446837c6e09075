// Pages: stacks (list, ones made outside portainer.py to adopt) and the stack editor.
import {api, request} from '../api.js';
import {constants} from '../constants.js';
import {DEPLOY_ID_HEADER, progressKey, progressLine} from '../deploy-progress.js';
import {formError, onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {stackImageUpdates} from '../image-updates.js';
import {isAdmin, session} from '../session.js';
import {render} from '../shell.js';
import {bindGitStackCard, gitStackCard} from './stack-git.js';
import {demuxLogs, jsonLines} from '../streams.js';
import {bindEditor} from '../widgets.js';

// A deploy's live progress: a deploy id of the page's choosing, its stream opened (GET
// /api/stacks/deploys/{id}/progress, JSON lines ending with the deploy) before the deploy call that names it in
// X-Portainer-Deploy-Id. Shows each event in `panel`; resolves, once the stream is open, with that header.
function deployId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map(b => b.toString(16).padStart(2, '0')).join('');
}
async function watchDeploy(panel) {
  const id = deployId(), lines = [], keyed = new Map();
  panel.hidden = false; panel.textContent = 'starting…';
  const response = await request('GET', `/api/stacks/deploys/${id}/progress`, {signal: new AbortController().signal});
  const draw = () => { panel.textContent = lines.join('\n'); panel.scrollTop = panel.scrollHeight; };
  const feed = jsonLines(e => {
    const key = progressKey(e), line = progressLine(e);
    if (key && keyed.has(key)) lines[keyed.get(key)] = line;
    else { if (key) keyed.set(key, lines.length); lines.push(line); }
    draw();
  });
  const reader = response.body.getReader();
  (async () => { try { for (;;) { const {done, value} = await reader.read(); if (done) return; feed(value); } } catch (e) { /* the page went away */ } })();
  return {[DEPLOY_ID_HEADER]: id};
}

// Who may use a stack, from its resource control: a stack without one is for administrators only.
function stackAccess(rc, users, teams) {
  if (!rc || rc.AdministratorsOnly) return 'administrators';
  if (rc.Public) return 'public';
  return [...rc.UserAccesses.map(a => a.UserId === session.me.Id ? 'you' : (users.find(u => u.Id === a.UserId) || {}).Username || `user ${a.UserId}`),
    ...rc.TeamAccesses.map(a => 'team ' + ((teams.find(t => t.Id === a.TeamId) || {}).Name || a.TeamId))].join(', ') || 'administrators';
}
export async function pageStacks() {
  const [stacks, eps, users, teams] = await Promise.all([api('GET', '/api/stacks'), api('GET', '/api/endpoints'),
    api('GET', '/api/users').catch(() => []), api('GET', '/api/teams').catch(() => [])]);
  const epName = id => (eps.find(e => e.Id === id) || {}).Name || id;
  const outside = [];
  for (const ep of eps.filter(e => e.Status === constants.EnvironmentStatus.Up && e.Type === constants.EnvironmentTypes.Docker)) {
    try { outside.push(...await api('GET', `/api/stacks/outside?endpointId=${ep.Id}`)); } catch (e) { /* no stack rights there */ }
  }
  render('Stacks', `<div class="toolbar"><h2 class="flat">Stacks</h2><span class="spacer"></span>
    ${isAdmin() ? '<a href="#/edge/stacks">Edge stacks</a>' : ''}<a href="#/stacks/new/git"><button>Add stack from git</button></a><a href="#/stacks/new"><button class="primary">Add stack</button></a></div>
    <div class="card"><table><thead><tr><th>Name</th><th>Type</th><th>Environment</th><th>State</th><th>Owner/Access</th><th>Created</th></tr></thead><tbody>
    ${stacks.map(s => `<tr><td><a href="#/stacks/${s.Id}">${esc(s.Name)}</a>${s.GitConfig ? ' <span class="badge" title="deployed from a git repository">git</span>' : ''}</td><td>${esc(constants.StackTypeNames[s.Type])}</td>
      <td>${esc(epName(s.EndpointId))}</td><td class="${s.Status === constants.StackStatus.Active ? 'running' : 'exited'}">${s.Status === constants.StackStatus.Active ? 'active' : 'inactive'}</td>
      <td class="access">${esc(stackAccess(s.ResourceControl, users, teams))}</td>
      <td>${new Date(s.CreationDate * 1000).toLocaleString()}</td></tr>`).join('') || '<tr><td colspan="6" class="muted">No stack yet.</td></tr>'}
    </tbody></table></div>
    ${outside.length ? `<div class="card"><h3>Made outside portainer.py</h3><table><tr><th>Project</th><th>Environment</th><th>Services</th><th>Running</th><th></th></tr>
    ${outside.map(p => `<tr><td>${esc(p.Name)}</td><td>${esc(epName(p.EndpointId))}</td><td>${esc(p.Services.join(', '))}</td>
      <td>${p.Running}/${p.Containers}</td><td>${isAdmin() ? `<a href="#/stacks/adopt/${p.EndpointId}/${encodeURIComponent(p.Name)}">Adopt</a>` : ''}</td></tr>`).join('')}</table></div>` : ''}`);
}
function envText(env) { return (env || []).map(e => `${e.name}=${e.value}`).join('\n'); }
function envList(text) { return text.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#')).map(l => { const i = l.indexOf('='); return i < 0 ? {name: l, value: ''} : {name: l.slice(0, i), value: l.slice(i + 1)}; }); }
export async function pageStackEditor(id, adopt) {
  const eps = await api('GET', '/api/endpoints');
  let stack = null, content = 'services:\n  web:\n    image: busybox:local\n    command: sleep 3600\n', services = [];
  let users = [], teams = [];
  if (id) { stack = await api('GET', `/api/stacks/${id}`); content = (await api('GET', `/api/stacks/${id}/file`)).StackFileContent;
    services = await api('GET', `/api/stacks/${id}/services`).catch(() => []);
    [users, teams] = await Promise.all([api('GET', '/api/users').catch(() => []), api('GET', '/api/teams').catch(() => [])]); }
  const rc = stack && stack.ResourceControl;
  let badLine = 0;
  render('Stack', `<div class="card"><h2>${stack ? 'Stack ' + esc(stack.Name) : adopt ? 'Adopt ' + esc(adopt.name) : 'New stack'}</h2><form id="f">
    ${stack ? '' : `<label for="n">Name</label><input id="n" required pattern="[a-z0-9][a-z0-9_\\-]*" value="${esc(adopt ? adopt.name : '')}" ${adopt ? 'readonly' : ''}>
      <label for="ep">Environment</label><select id="ep">${eps.map(e => `<option value="${e.Id}" ${adopt && +adopt.ep === e.Id ? 'selected' : ''}>${esc(e.Name)}</option>`).join('')}</select>
      ${adopt ? '' : `<label for="ty">Type</label><select id="ty"><option value="${constants.StackTypes.Compose}">Compose (standalone)</option><option value="${constants.StackTypes.Swarm}">Swarm</option></select>
      <label for="upload">Upload a compose file or a project archive (instead of the text below)</label>
      <input id="upload" type="file" name="file" accept=".yml,.yaml,.tar,.tgz,.tar.gz,.zip,application/yaml,text/yaml,application/x-tar,application/gzip,application/zip">
      <label for="compose-file">Compose file in the archive (default: compose.yaml, docker-compose.yml, …)</label>
      <input id="compose-file" placeholder="docker-compose.yml">
      <p class="muted">An archive (.tar, .tar.gz, .zip) is the whole project: its relative binds, build contexts, secret and config files resolve inside it.</p>`}`}
    <label for="content">Compose file</label><div class="editor"><div class="gutter" id="gutter" aria-hidden="true"></div>
    <textarea id="content" rows="22" spellcheck="false" ${stack && stack.GitConfig ? 'readonly aria-describedby="git-note"' : ''}>${esc(content)}</textarea></div>
    ${stack && stack.GitConfig ? '<p class="muted" id="git-note">This file comes from the git repository below: push a change there, then pull and redeploy.</p>' : ''}
    ${stack ? `<p>Owner/Access: <b id="stack-access">${esc(stackAccess(rc, users, teams))}</b></p>` : ''}
    ${stack && stack.Env === null ? '<p class="muted">Its environment variables are shown only to those who may manage this stack.</p>' :
    `<label for="env">Environment variables (NAME=value, one a line)</label><textarea id="env" rows="4">${esc(envText(stack && stack.Env))}</textarea>`}
    ${stack && !stack.GitConfig ? `<label for="upload">Replace the project with an archive (optional: .tar, .tar.gz, .zip; its compose file replaces the text above)</label>
      <input id="upload" type="file" name="file" accept=".tar,.tgz,.tar.gz,.zip,application/x-tar,application/gzip,application/zip">
      <label for="compose-file">Compose file in the archive</label><input id="compose-file" placeholder="${esc(stack.EntryPoint || 'docker-compose.yml')}">
      <label><input type="checkbox" id="prune" class="tick"> Remove services no longer in the file</label>
      <label><input type="checkbox" id="pull" class="tick"> Pull images again</label>` : ''}
    <div class="error" role="alert" id="err"></div>
    <pre id="deploy-progress" class="small mono build-log" aria-live="polite" aria-label="Deploy progress" hidden></pre>
    <div class="toolbar">${stack && stack.GitConfig ? '' : `<button class="primary" type="submit">${stack ? 'Update the stack' : adopt ? 'Adopt' : 'Deploy the stack'}</button>`}
    ${stack ? `<button type="button" data-act="${stack.Status === constants.StackStatus.Active ? 'stop' : 'start'}">${stack.Status === constants.StackStatus.Active ? 'Stop' : 'Start'}</button>
      <button type="button" class="danger" data-act="remove">Remove</button>` : ''}</div></form></div>
    ${stack && stack.GitConfig ? gitStackCard(stack) : ''}
    ${stack ? `<div class="card"><h3>Services</h3>${stack.Type === constants.StackTypes.Compose ? `<p><a class="button" href="#/env/${stack.EndpointId}/logs?stack=${encodeURIComponent(stack.Name)}">Logs of all its containers</a></p>` : ''}<div id="stack-updates"></div><table><tr><th>Service</th><th>Image</th><th>Containers</th></tr>
      ${services.map(s => `<tr><td>${esc(s.Name)}</td><td>${esc(s.Image)}</td><td>${s.Containers.map(c => `<span class="badge ${esc(c.State)}">${esc(c.Name)}: ${esc(c.State)}</span>` +
        (stack.Type === constants.StackTypes.Compose ? ` <button type="button" data-logs="${esc(c.Id)}">logs</button>` : '')).join(' ') || '<span class="muted">none</span>'}</td></tr>`).join('')}</table>
      <pre id="logs" aria-live="polite"></pre></div>` : ''}
    ${stack && eps.some(e => e.Id !== stack.EndpointId) ? `<div class="card"><form id="migrate"><h3>Migrate to another environment</h3>
      <p class="muted">Deploys the stack on the chosen environment, then removes it from ${esc((eps.find(e => e.Id === stack.EndpointId) || {}).Name || 'this one')}. Volumes' data does not move.</p>
      <div class="row"><div><label for="migrate-ep">Environment</label><select id="migrate-ep" name="EndpointID">${eps.filter(e => e.Id !== stack.EndpointId).map(e => `<option value="${e.Id}">${esc(e.Name)}</option>`).join('')}</select></div>
      <div><label for="migrate-name">New name (optional)</label><input id="migrate-name" name="Name" pattern="[a-z0-9][a-z0-9_\\-]*" placeholder="${esc(stack.Name)}"></div></div>
      <div class="error" role="alert"></div><p><button type="submit">Migrate to…</button></p></form></div>` : ''}
    ${stack && isAdmin() ? `<div class="card"><form id="acl"><h3>Access</h3>
      <label for="w">Shared with</label><select id="w" multiple>${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<option value="u${u.Id}" ${rc && rc.UserAccesses.some(a => a.UserId === u.Id) ? 'selected' : ''}>${esc(u.Username)}</option>`).join('')}
        ${teams.map(t => `<option value="t${t.Id}" ${rc && rc.TeamAccesses.some(a => a.TeamId === t.Id) ? 'selected' : ''}>team ${esc(t.Name)}</option>`).join('')}</select>
      <label class="check"><input type="checkbox" id="pub" ${rc && rc.Public ? 'checked' : ''}> Public: everyone with access to the environment</label>
      <label class="check"><input type="checkbox" id="adm" ${!rc || rc.AdministratorsOnly ? 'checked' : ''}> Administrators only</label>
      <div class="error" role="alert"></div><button class="primary">Save access</button></form></div>` : ''}`);
  const migrate = document.getElementById('migrate');
  if (migrate) onSubmit(migrate, async data => {
    const target = eps.find(e => e.Id === +data.get('EndpointID'));
    if (!confirm(`Move stack ${stack.Name} to ${target.Name}? It is removed from its current environment once it runs there.`)) return;
    const moved = await api('POST', `/api/stacks/${stack.Id}/migrate?endpointId=${stack.EndpointId}`, {EndpointID: target.Id, Name: data.get('Name').trim()});
    toast(`Stack ${moved.Name} now runs on ${target.Name}`); await pageStackEditor(moved.Id);
  });
  const acl = document.getElementById('acl');
  if (acl) acl.onsubmit = async e => { e.preventDefault(); const chosen = [...acl.w.selectedOptions].map(o => o.value);
    const body = {Public: acl.pub.checked, AdministratorsOnly: acl.adm.checked,
      Users: chosen.filter(v => v[0] === 'u').map(v => +v.slice(1)), Teams: chosen.filter(v => v[0] === 't').map(v => +v.slice(1))};
    try { if (rc) await api('PUT', `/api/resource_controls/${rc.Id}`, body);
      else await api('POST', '/api/resource_controls', {...body, ResourceID: `${stack.EndpointId}_${stack.Name}`, Type: constants.ResourceControlTypes.Stack});
      toast('Access saved'); pageStackEditor(stack.Id); } catch (err) { formError(acl, err); } };
  const redraw = bindEditor(() => badLine);
  if (stack) stackImageUpdates(stack, () => pageStackEditor(stack.Id));
  if (stack && stack.GitConfig) bindGitStackCard(stack, () => pageStackEditor(stack.Id));
  const f = document.getElementById('f'), err = document.getElementById('err');
  const fail = e => { err.textContent = e.message; const m = /line (\d+)/.exec(e.message); badLine = m ? +m[1] : 0; redraw(); };
  // A compose file or project archive as a multipart upload, as Portainer's "Upload" build method sends it.
  const uploadForm = (upload, body) => { const form = new FormData(); form.set('file', upload);
    if (body.Env) form.set('Env', JSON.stringify(body.Env));
    for (const k of ['Name', 'Prune', 'PullImage']) if (body[k] !== undefined) form.set(k, String(body[k]));
    if (f['compose-file'] && f['compose-file'].value.trim()) form.set('ComposeFile', f['compose-file'].value.trim());
    return form; };
  f.onsubmit = async e => { e.preventDefault(); err.textContent = ''; badLine = 0; redraw();
    const body = {StackFileContent: f.content.value, ...(f.env ? {Env: envList(f.env.value)} : {})};
    const upload = f.upload && f.upload.files[0], button = f.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const headers = await watchDeploy(document.getElementById('deploy-progress'));
      if (stack) { body.Prune = f.prune.checked; body.PullImage = f.pull.checked;
        const path = `/api/stacks/${stack.Id}?endpointId=${stack.EndpointId}`;
        if (upload) { delete body.StackFileContent; await api('PUT', path, uploadForm(upload, body), headers); }
        else await api('PUT', path, body, headers);
        toast(`Stack ${stack.Name} updated`); return pageStackEditor(stack.Id); }
      body.Name = f.n.value;
      const ep = f.ep.value;
      const kind = !adopt && +f.ty.value === constants.StackTypes.Swarm ? 'swarm' : 'standalone';
      let made;
      if (adopt) made = await api('POST', `/api/stacks/adopt?endpointId=${ep}`, body, headers);
      else if (upload) made = await api('POST', `/api/stacks/create/${kind}/file?endpointId=${ep}`, uploadForm(upload, body), headers);
      else made = await api('POST', `/api/stacks/create/${kind}/string?endpointId=${ep}`, body, headers);
      toast(`Stack ${made.Name} deployed`); location.hash = `#/stacks/${made.Id}`;
    } catch (e2) { fail(e2); } finally { button.disabled = false; } };
  document.querySelectorAll('[data-logs]').forEach(b => b.onclick = async () => {
    const path = `/api/endpoints/${stack.EndpointId}/docker/containers/${b.dataset.logs}/logs?stdout=1&stderr=1&tail=200`;
    document.getElementById('logs').textContent = await request('GET', path).then(async r => demuxLogs(new Uint8Array(await r.arrayBuffer())),
      err => `logs unavailable (${err.status})`); });
  document.querySelectorAll('[data-act]').forEach(b => b.onclick = async () => { err.textContent = '';
    try { if (b.dataset.act === 'remove') { if (!confirm(`Remove stack ${stack.Name} and everything it created?`)) return;
        await api('DELETE', `/api/stacks/${stack.Id}?endpointId=${stack.EndpointId}`); location.hash = '#/stacks'; return; }
      await api('POST', `/api/stacks/${stack.Id}/${b.dataset.act}?endpointId=${stack.EndpointId}`); pageStackEditor(stack.Id);
    } catch (e2) { fail(e2); } });
}
