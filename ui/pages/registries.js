// Pages: registries (add, edit, who may use them), browsing one, and the registry picker of pulls.
import {api, apiStream} from '../api.js';
import {constants} from '../constants.js';
import {dockerBase} from '../docker.js';
import {$, $$} from '../dom.js';
import {formError, toast} from '../feedback.js';
import {esc} from '../format.js';
import {isAdmin} from '../session.js';
import {render} from '../shell.js';
import {jsonLines} from '../streams.js';
import {progressView} from '../widgets.js';

export async function pageRegistries(editId) {
  const regs = await api('GET', '/api/registries');
  const editing = regs.find(r => String(r.Id) === String(editId));
  const r0 = editing || {Name: '', URL: '', Type: constants.RegistryTypes.Custom, Authentication: false, Username: '', TLSSkipVerify: false};
  render('Registries', `<div class="card"><h2>Registries</h2><table><thead><tr><th>Name</th><th>URL</th>
    <th class="hide-sm">Type</th><th>Credentials</th><th></th></tr></thead><tbody>
    ${regs.map(r => `<tr><td>${esc(r.Name)}</td><td>${esc(r.URL)}</td><td class="hide-sm">${esc(constants.RegistryTypeNames[r.Type] || r.Type)}</td>
      <td>${r.Authentication ? esc(r.Username) : '<span class="muted">anonymous</span>'}</td>
      <td><a href="#/registries/${r.Id}">Browse</a> ${isAdmin() ? `<button class="small" data-edit="${r.Id}">Edit</button>
      <button class="small" data-access="${r.Id}">Access</button> <button class="small danger" data-del="${r.Id}">Remove</button>` : ''}</td></tr>`).join('')
      || '<tr><td colspan="5" class="muted">No registry yet.</td></tr>'}</tbody></table></div>
    ${isAdmin() ? `<div class="card"><h3>${editing ? 'Edit registry ' + esc(editing.Name) : 'Add registry'}</h3><form id="rf">
      <label for="rn">Name</label><input id="rn" required value="${esc(r0.Name)}">
      <label for="ru">URL (host:port, e.g. registry.example.com or 127.0.0.1:5000)</label><input id="ru" required value="${esc(r0.URL)}">
      <label for="rt">Type</label><select id="rt">${Object.entries(constants.RegistryTypeNames).map(([k, v]) => `<option value="${k}" ${+k === r0.Type ? 'selected' : ''}>${v}</option>`).join('')}</select>
      <label class="check"><input type="checkbox" id="ra" ${r0.Authentication ? 'checked' : ''}> Authentication</label>
      <label for="rus">Username</label><input id="rus" autocomplete="off" value="${esc(r0.Username)}">
      <label for="rp">Password${editing ? ' (leave empty to keep the current one)' : ''}</label><input id="rp" type="password" autocomplete="new-password">
      <label class="check"><input type="checkbox" id="rk" ${r0.TLSSkipVerify ? 'checked' : ''}> Skip TLS certificate verification</label>
      <div class="error" role="alert"></div><button class="primary">${editing ? 'Save' : 'Add registry'}</button>
      ${editing ? '<a href="#/registries">Cancel</a>' : ''}</form></div><div id="access"></div>` : ''}`);
  if (!isAdmin()) return;
  const f = $('#rf');
  f.onsubmit = async e => { e.preventDefault();
    const body = {Name: f.rn.value, URL: f.ru.value, Type: +f.rt.value, Authentication: f.ra.checked,
                  Username: f.rus.value, TLSSkipVerify: f.rk.checked};
    if (f.rp.value) body.Password = f.rp.value;
    try { if (editing) await api('PUT', `/api/registries/${editing.Id}`, body); else await api('POST', '/api/registries', body);
      toast(editing ? 'Registry saved' : 'Registry added'); location.hash = '#/registries'; pageRegistries(); } catch (err) { formError(f, err); } };
  $$('[data-edit]').forEach(b => b.onclick = () => pageRegistries(b.dataset.edit));
  $$('[data-del]').forEach(b => b.onclick = async () => {
    if (!confirm('Remove this registry and its credentials?')) return;
    try { await api('DELETE', `/api/registries/${b.dataset.del}`); pageRegistries(); } catch (err) { toast(err.message, true); } });
  $$('[data-access]').forEach(b => b.onclick = () => registryAccessForm(regs.find(r => String(r.Id) === b.dataset.access)));
}
async function registryAccessForm(reg) {
  const [eps, users, teams] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/users'),
    api('GET', '/api/teams').catch(() => [])]);
  const box = $('#access');
  const draw = envId => { const acc = (reg.RegistryAccesses || {})[envId] || {};
    const users_ = acc.UserAccessPolicies || {}, teams_ = acc.TeamAccessPolicies || {};
    box.innerHTML = `<div class="card"><h3>Who may use ${esc(reg.Name)}</h3><form id="af"><label for="ae">Environment</label>
      <select id="ae">${eps.map(ep => `<option value="${ep.Id}" ${String(ep.Id) === String(envId) ? 'selected' : ''}>${esc(ep.Name)}</option>`).join('')}</select>
      <fieldset><legend>Users</legend>${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<label class="check"><input type="checkbox" name="u" value="${u.Id}" ${users_[u.Id] ? 'checked' : ''}> ${esc(u.Username)}</label>`).join('') || '<span class="muted">no standard users</span>'}</fieldset>
      ${teams.length ? `<fieldset><legend>Teams</legend>${teams.map(t => `<label class="check"><input type="checkbox" name="t" value="${t.Id}" ${teams_[t.Id] ? 'checked' : ''}> ${esc(t.Name)}</label>`).join('')}</fieldset>` : ''}
      <div class="error" role="alert"></div><button class="primary">Save access</button></form></div>`;
    const f = $('#af');
    f.ae.onchange = () => draw(f.ae.value);
    f.onsubmit = async e => { e.preventDefault();
      const pick = n => Object.fromEntries($$(`input[name=${n}]:checked`, f).map(x => [x.value, {RoleId: 0}]));
      const body = {UserAccessPolicies: pick('u'), TeamAccessPolicies: pick('t')};
      try { await api('PUT', `/api/endpoints/${f.ae.value}/registries/${reg.Id}`, body);
        reg.RegistryAccesses = reg.RegistryAccesses || {}; reg.RegistryAccesses[f.ae.value] = body; toast('Access saved'); }
      catch (err) { formError(f, err); } }; };
  draw(eps.length ? eps[0].Id : '');
}
export async function pageRegistryBrowse(id) {
  const [reg, eps] = await Promise.all([api('GET', `/api/registries/${id}`), api('GET', '/api/endpoints')]);
  render(reg.Name, `<div class="card"><h2>${esc(reg.Name)} <span class="muted">${esc(reg.URL)}</span></h2>
    <div class="error" role="alert" id="reg-err"></div><div class="grid"><div><h3>Repositories</h3><div id="repos" class="muted">Loading…</div></div>
    <div><h3>Tags</h3><div id="tags" class="muted">Choose a repository.</div></div></div>
    <label for="pull-env">Pull to environment</label><select id="pull-env">${eps.map(ep => `<option value="${ep.Id}">${esc(ep.Name)}</option>`).join('')}</select>
    <div id="pulled"></div></div>`, `<a href="#/registries">Registries</a> / ${esc(reg.Name)}`);
  const err = $('#reg-err');
  let repos = [];
  try { repos = (await api('GET', `/api/registries/${id}/v2/_catalog`)).repositories; } catch (e) { err.textContent = e.message; }
  $('#repos').innerHTML = repos.map(r => `<div><a href="#/registries/${id}" data-repo="${esc(r)}">${esc(r)}</a></div>`).join('') || 'No repository.';
  $$('[data-repo]').forEach(a => a.onclick = async e => { e.preventDefault(); err.textContent = '';
    const repo = a.dataset.repo, box = $('#tags');
    try { const t = await api('GET', `/api/registries/${id}/v2/${repo.split('/').map(encodeURIComponent).join('/')}/tags/list`);
      box.innerHTML = (t.tags || []).map(tag => `<div>${esc(repo)}:<b>${esc(tag)}</b> <button class="small" data-pull="${esc(tag)}">Pull</button></div>`).join('') || 'No tag.';
      $$('[data-pull]', box).forEach(b => b.onclick = () => pullWithRegistry(reg, repo, b.dataset.pull));
    } catch (e2) { err.textContent = e2.message; } });
}
// A pull through the proxy that names the registry, as Portainer's UI does: the server adds its credentials.
async function pullWithRegistry(reg, repo, tag) {
  const env = $('#pull-env').value, image = `${reg.URL.replace(/^\w+:\/\//, '').split('/')[0]}/${repo}`;
  const view = progressView($('#pulled'));
  try {
    await apiStream('POST', `${dockerBase(env)}/images/create?fromImage=${encodeURIComponent(image)}&tag=${encodeURIComponent(tag)}`,
      undefined, jsonLines(m => view.feed(m)), {'X-Registry-Auth': btoa(JSON.stringify({registryId: reg.Id}))});
    if (view.failed()) throw new Error(view.failed());
    toast(`Pulled ${image}:${tag}`);
  } catch (err) { toast(`Pull of ${image}:${tag} failed: ${err.message}`, true); }
}
// A registry picker for pulls: the registries the user may use here; the server adds the chosen one's credentials.
export async function registryChoice(envId, select) {
  const regs = await api('GET', `/api/endpoints/${envId}/registries`).catch(() => []);
  select.insertAdjacentHTML('beforeend', regs.map(r => `<option value="${r.Id}">${esc(r.Name)} (${esc(r.URL)})</option>`).join(''));
  const host = id => { const r = regs.find(x => String(x.Id) === String(id)); return r ? r.URL.replace(/^\w+:\/\//, '').split('/')[0] : ''; };
  return {
    headers: id => (id ? {'X-Registry-Auth': btoa(JSON.stringify({registryId: +id}))} : {}),
    qualify: (id, ref) => (id && host(id) && !ref.startsWith(host(id) + '/') ? `${host(id)}/${ref}` : ref),
  };
}
