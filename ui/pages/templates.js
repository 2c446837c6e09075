// Page: app templates and custom templates, deployed to an environment.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {formError} from '../feedback.js';
import {esc} from '../format.js';
import {render} from '../shell.js';
import {bindGitTemplates, gitTemplateForm} from './stack-git.js';

export async function pageTemplates() {
  const [doc, custom, eps] = await Promise.all([api('GET', '/api/templates'), api('GET', '/api/custom_templates'), api('GET', '/api/endpoints')]);
  const kinds = constants.TemplateTypeNames;
  const card = (t, key) => `<div class="card"><b>${esc(t.title || t.Title)}</b> <span class="badge">${kinds[t.type || t.Type] || ''}</span>
    <div class="muted">${esc(t.description || t.Description)}</div>
    <form class="deploy" data-key="${key}"><label>Name</label><input name="name" required value="${esc(t.name || '')}">
    ${(t.env || []).map(e => `<label>${esc(e.label || e.name)}</label><input name="env-${esc(e.name)}" value="${esc(e.default || '')}">`).join('')}
    <label>Environment</label><select name="ep">${eps.map(e => `<option value="${e.Id}">${esc(e.Name)}</option>`).join('')}</select>
    <div class="error" role="alert"></div><button class="primary">Deploy</button>
    ${key.startsWith('c') ? `<button type="button" class="danger" data-del="${key.slice(1)}">Remove</button>` : ''}
    ${key.startsWith('c') && t.GitConfig ? `<button type="button" data-git-fetch="${t.Id}">Fetch again from git</button>` : ''}
    ${key.startsWith('t') && t.type !== constants.TemplateTypes.Container ? `<button type="button" data-file="${t.id}" aria-controls="template-file-${t.id}">View file</button>` : ''}</form>
    ${key.startsWith('t') ? `<pre class="copyable mono small hidden" id="template-file-${t.id}" aria-label="Compose file of ${esc(t.title)}"></pre>` : ''}</div>`;
  render('App templates', `<h2>App templates</h2><div class="grid">${doc.templates.map(t => card(t, 't' + t.id)).join('')}</div>
    <h2>Custom templates</h2><div class="grid">${custom.map(t => card(t, 'c' + t.Id)).join('') || '<p class="muted">None yet.</p>'}</div>
    <div class="card"><h3>New custom template</h3><form id="nt"><label for="tt">Title</label><input id="tt" required>
    <label for="td">Description</label><input id="td" required><label for="tc">Compose file</label><textarea id="tc" rows="10" spellcheck="false"></textarea>
    <div class="error" role="alert"></div><button class="primary">Save template</button></form></div>${gitTemplateForm()}`);
  bindGitTemplates(pageTemplates);
  document.querySelectorAll('form.deploy').forEach(f => f.onsubmit = async e => { e.preventDefault();
    const env = [...f.querySelectorAll('input[name^="env-"]')].map(i => ({name: i.name.slice(4), value: i.value}));
    const key = f.dataset.key, path = key.startsWith('t') ? `/api/templates/${key.slice(1)}` : `/api/custom_templates/${key.slice(1)}`;
    try { const r = await api('POST', `${path}/deploy?endpointId=${f.ep.value}`, {Name: f.name.value, Env: env});
      location.hash = r.EndpointId ? `#/stacks/${r.Id}` : `#/env/${f.ep.value}/containers`; } catch (err) { formError(f, err); } });
  // A stack template's compose file, read from the server (POST /api/templates/{id}/file), shown under its card.
  document.querySelectorAll('[data-file]').forEach(b => b.onclick = async () => {
    const box = document.getElementById(`template-file-${b.dataset.file}`);
    if (!box.classList.contains('hidden')) { box.classList.add('hidden'); b.textContent = 'View file'; return; }
    try { box.textContent = (await api('POST', `/api/templates/${b.dataset.file}/file`)).FileContent; box.classList.remove('hidden'); b.textContent = 'Hide file'; }
    catch (err) { formError(b.closest('form'), err); } });
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/custom_templates/${b.dataset.del}`); pageTemplates(); });
  const nt = document.getElementById('nt');
  nt.onsubmit = async e => { e.preventDefault(); try { await api('POST', '/api/custom_templates/create/string',
    {Title: nt.tt.value, Description: nt.td.value, Type: constants.TemplateTypes.ComposeStack, FileContent: nt.tc.value}); pageTemplates(); } catch (err) { formError(nt, err); } };
}
