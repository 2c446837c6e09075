// Pages: stacks from a git repository (the create form), and the git card on a stack's page (repository, deployed
// commit, last check, "Pull and redeploy", the webhook URL, auto-update settings).
import {api} from '../api.js';
import {$} from '../dom.js';
import {constants} from '../constants.js';
import {onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {render} from '../shell.js';

function envList(text) {
  return text.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#'))
    .map(l => { const i = l.indexOf('='); return i < 0 ? {name: l, value: ''} : {name: l.slice(0, i), value: l.slice(i + 1)}; });
}
const lines = text => text.split('\n').map(l => l.trim()).filter(Boolean);
// POST <origin>/api/stacks/webhooks/<id> fetches the repository and redeploys the stack.
export const stackWebhookUrl = id => `${location.origin}/api/stacks/webhooks/${id}`;
// POST <origin>/api/edge_stacks/webhooks/<id> fetches the repository and deploys it to every edge environment.
export const edgeStackWebhookUrl = id => `${location.origin}/api/edge_stacks/webhooks/${id}`;
const POLL_NEEDS_A_NAME = 'polling needs a branch or a tag: a commit id never changes';

// Auto-update fields, shared by the create form and the stack's git card: {Interval, Webhook, ForceUpdate, ForcePullImage}.
function autoUpdateFields(auto) {
  auto = auto || {};
  return `<fieldset><legend>Automatic updates</legend>
    <label for="git-interval">Poll the repository every (a duration such as 5m or 1h; empty: no polling; ${POLL_NEEDS_A_NAME})</label>
    <input id="git-interval" name="Interval" placeholder="5m" value="${esc(auto.Interval || '')}">
    <label class="check"><input type="checkbox" id="git-webhook" name="Webhook" ${auto.Webhook ? 'checked' : ''}> Webhook: a secret URL that redeploys the stack when called</label>
    <label class="check"><input type="checkbox" id="git-webhook-env" name="WebhookEnv" ${auto.WebhookEnv ? 'checked' : ''}> The webhook's query parameters may set the stack's variables</label>
    <label class="check"><input type="checkbox" id="git-force" name="ForceUpdate" ${auto.ForceUpdate ? 'checked' : ''}> Redeploy when the containers drifted from the file, even without a new commit</label>
    <label class="check"><input type="checkbox" id="git-pull" name="ForcePullImage" ${auto.ForcePullImage ? 'checked' : ''}> Pull images again at each update</label></fieldset>`;
}
function autoUpdateOf(data) {
  return {Interval: (data.get('Interval') || '').trim(), Webhook: data.get('Webhook') === 'on', WebhookEnv: data.get('WebhookEnv') === 'on',
    ForceUpdate: data.get('ForceUpdate') === 'on', ForcePullImage: data.get('ForcePullImage') === 'on'};
}
function credentialFields(config) {
  const auth = config && config.Authentication;
  return `<label class="check"><input type="checkbox" id="git-auth" name="RepositoryAuthentication" ${auth ? 'checked' : ''}> Authentication</label>
    <div class="row"><div><label for="git-user">Username</label><input id="git-user" name="RepositoryUsername" autocomplete="off" value="${esc(auth ? auth.Username : '')}"></div>
    <div><label for="git-password">Password or token${config ? ' (empty: keep the saved one)' : ''}</label><input id="git-password" name="RepositoryPassword" type="password" autocomplete="new-password"></div></div>
    <label for="git-key">SSH deploy key (for ssh:// or user@host:path URLs; private key, OpenSSH format)</label>
    <textarea id="git-key" name="RepositorySSHKey" rows="3" spellcheck="false" placeholder="-----BEGIN OPENSSH PRIVATE KEY-----"></textarea>
    <label class="check"><input type="checkbox" id="git-tls" name="TLSSkipVerify" ${config && config.TLSSkipVerify ? 'checked' : ''}> Skip TLS verification</label>`;
}
function credentialsOf(data) {
  const body = {RepositoryAuthentication: data.get('RepositoryAuthentication') === 'on', TLSSkipVerify: data.get('TLSSkipVerify') === 'on'};
  if (body.RepositoryAuthentication) { body.RepositoryUsername = data.get('RepositoryUsername').trim(); body.RepositoryPassword = data.get('RepositoryPassword'); }
  if (data.get('RepositorySSHKey').trim()) body.RepositorySSHKey = data.get('RepositorySSHKey');
  return body;
}

export async function pageStackFromGit() {
  const eps = await api('GET', '/api/endpoints');
  render('Stack from git', `<div class="card"><h2>New stack from a git repository</h2><form id="git-stack">
    <label for="git-name">Name</label><input id="git-name" name="Name" required pattern="[a-z0-9][a-z0-9_\\-]*">
    <div class="row"><div><label for="git-ep">Environment</label><select id="git-ep" name="EndpointID">${eps.map(e => `<option value="${e.Id}">${esc(e.Name)}</option>`).join('')}</select></div>
    <div><label for="git-type">Type</label><select id="git-type" name="Type"><option value="${constants.StackTypes.Compose}">Compose (standalone)</option><option value="${constants.StackTypes.Swarm}">Swarm</option></select></div></div>
    <label for="git-url">Repository URL</label><input id="git-url" name="RepositoryURL" required placeholder="https://git.example.com/team/app.git">
    <div class="row"><div><label for="git-ref">Reference</label><input id="git-ref" name="RepositoryReferenceName" value="refs/heads/main"></div>
    <div><label for="git-path">Compose path</label><input id="git-path" name="ComposeFile" value="docker-compose.yml"></div></div>
    <label for="git-extra">Additional files (one path a line, merged over the compose file in order)</label><textarea id="git-extra" name="AdditionalFiles" rows="2"></textarea>
    ${credentialFields(null)}
    ${autoUpdateFields(null)}
    <label for="git-env">Environment variables (NAME=value, one a line)</label><textarea id="git-env" name="Env" rows="4"></textarea>
    <div class="error" role="alert"></div>
    <div class="toolbar"><button class="primary" type="submit">Deploy the stack</button></div></form></div>`);
  onSubmit($('#git-stack'), async data => {
    const kind = +data.get('Type') === constants.StackTypes.Swarm ? 'swarm' : 'standalone';
    const body = {Name: data.get('Name').trim(), RepositoryURL: data.get('RepositoryURL').trim(),
      RepositoryReferenceName: data.get('RepositoryReferenceName').trim(), ComposeFile: data.get('ComposeFile').trim(),
      AdditionalFiles: lines(data.get('AdditionalFiles')), Env: envList(data.get('Env')), ...credentialsOf(data)};
    const auto = autoUpdateOf(data);
    if (auto.Interval || auto.Webhook) body.AutoUpdate = auto;
    const made = await api('POST', `/api/stacks/create/${kind}/repository?endpointId=${data.get('EndpointID')}`, body);
    location.hash = `#/stacks/${made.Id}`;
  });
}

const when = seconds => seconds ? new Date(seconds * 1000).toLocaleString() : 'never';
// The card a git stack's page shows above its (read-only) compose file.
export function gitStackCard(stack) {
  const config = stack.GitConfig, check = stack.GitCheck || {}, auto = stack.AutoUpdate || {};
  return `<div class="card" id="git-card"><h3>Git repository</h3>
    <table><tr><th>Repository</th><td><code id="git-repo">${esc(config.URL)}</code></td></tr>
    <tr><th>Reference</th><td><code>${esc(config.ReferenceName || 'HEAD')}</code></td></tr>
    <tr><th>Compose path</th><td><code>${esc(config.ConfigFilePath)}</code>${(stack.AdditionalFiles || []).map(f => ` + <code>${esc(f)}</code>`).join('')}</td></tr>
    <tr><th>Deployed commit</th><td><code id="git-commit" title="${esc(config.ConfigHash)}">${esc((config.ConfigHash || '').slice(0, 12))}</code></td></tr>
    <tr><th>Last checked</th><td id="git-checked">${esc(when(check.Time))}${check.Outcome ? ` <span class="badge ${check.Outcome === 'failed' ? 'exited' : 'running'}">${esc(check.Outcome)}</span>` : ''}
      ${check.Trigger ? `<span class="muted">by ${esc(check.Trigger)}</span>` : ''} ${check.Message ? `<span class="muted">${esc(check.Message)}</span>` : ''}</td></tr>
    ${auto.Webhook ? `<tr><th>Webhook</th><td><code class="small webhook-url" id="git-webhook-url">${esc(stackWebhookUrl(auto.Webhook))}</code>
      <button type="button" class="small" id="git-webhook-copy" aria-label="Copy the webhook URL">Copy</button></td></tr>` : ''}</table>
    <form id="git-redeploy"><div class="row"><div><label for="git-redeploy-ref">Reference</label><input id="git-redeploy-ref" name="RepositoryReferenceName" value="${esc(config.ReferenceName)}"></div></div>
      <label class="check"><input type="checkbox" name="PullImage"> Pull images again</label>
      <label class="check"><input type="checkbox" name="Prune"> Remove services no longer in the file</label>
      <div class="error" role="alert"></div><button class="primary" type="submit">Pull and redeploy</button></form>
    <form id="git-settings"><h3>Git settings</h3>${credentialFields(config)}${autoUpdateFields(auto)}
      <div class="error" role="alert"></div><button type="submit">Save the git settings</button></form></div>`;
}
// The webhook URL's copy button: the clipboard where the page may write it, else the URL selected for Ctrl+C.
function bindWebhookCopy() {
  const copy = $('#git-webhook-copy');
  if (copy) copy.onclick = async () => {
    try { await navigator.clipboard.writeText($('#git-webhook-url').textContent); copy.textContent = 'Copied'; }
    catch (err) { const range = document.createRange(); range.selectNodeContents($('#git-webhook-url'));
      getSelection().removeAllRanges(); getSelection().addRange(range); copy.textContent = 'Selected: press Ctrl+C'; }
  };
}
export function bindGitStackCard(stack, reload) {
  bindWebhookCopy();
  const query = `?endpointId=${stack.EndpointId}`;
  onSubmit($('#git-redeploy'), async data => {
    const body = {RepositoryReferenceName: data.get('RepositoryReferenceName').trim(), PullImage: data.get('PullImage') === 'on', Prune: data.get('Prune') === 'on'};
    const env = $('#env'); if (env) body.Env = envList(env.value); // the variables as edited above
    const deployed = await api('PUT', `/api/stacks/${stack.Id}/git/redeploy${query}`, body);
    toast(`Deployed commit ${deployed.GitConfig.ConfigHash.slice(0, 12)}`); await reload();
  });
  onSubmit($('#git-settings'), async data => {
    const body = {...credentialsOf(data), AutoUpdate: autoUpdateOf(data)};
    if (body.RepositoryAuthentication && !body.RepositoryPassword) delete body.RepositoryPassword; // keep the saved one
    await api('POST', `/api/stacks/${stack.Id}/git${query}`, body); toast('Git settings saved'); await reload();
  });
}

// Custom templates and edge stacks from a repository: the same repository fields, their own routes.
function repositoryFields(prefix, pathField) {
  return `<label for="${prefix}-url">Repository URL</label><input id="${prefix}-url" name="RepositoryURL" required placeholder="https://git.example.com/team/app.git">
    <div class="row"><div><label for="${prefix}-ref">Reference</label><input id="${prefix}-ref" name="RepositoryReferenceName" value="refs/heads/main"></div>
    <div><label for="${prefix}-path">Compose path</label><input id="${prefix}-path" name="${pathField}" value="docker-compose.yml"></div></div>
    <label class="check"><input type="checkbox" name="RepositoryAuthentication"> Authentication</label>
    <div class="row"><div><label for="${prefix}-user">Username</label><input id="${prefix}-user" name="RepositoryUsername" autocomplete="off"></div>
    <div><label for="${prefix}-password">Password or token</label><input id="${prefix}-password" name="RepositoryPassword" type="password" autocomplete="new-password"></div></div>`;
}
function repositoryOf(data, pathField) {
  const body = {RepositoryURL: data.get('RepositoryURL').trim(), RepositoryReferenceName: data.get('RepositoryReferenceName').trim(),
    [pathField]: data.get(pathField).trim(), RepositoryAuthentication: data.get('RepositoryAuthentication') === 'on'};
  if (body.RepositoryAuthentication) { body.RepositoryUsername = data.get('RepositoryUsername').trim(); body.RepositoryPassword = data.get('RepositoryPassword'); }
  return body;
}
export function gitTemplateForm() {
  return `<div class="card"><h3>New custom template from a git repository</h3><form id="git-template">
    <label for="gt-title">Title</label><input id="gt-title" name="Title" required>
    <label for="gt-description">Description</label><input id="gt-description" name="Description" required>
    ${repositoryFields('gt', 'ComposeFilePathInRepository')}
    <div class="error" role="alert"></div><button class="primary" type="submit">Save template from git</button></form></div>`;
}
export function bindGitTemplates(reload) {
  onSubmit($('#git-template'), async data => {
    await api('POST', '/api/custom_templates/create/repository', {Title: data.get('Title').trim(), Description: data.get('Description').trim(),
      Type: constants.TemplateTypes.ComposeStack, ...repositoryOf(data, 'ComposeFilePathInRepository')});
    toast('Template saved from the repository'); await reload();
  });
  document.querySelectorAll('[data-git-fetch]').forEach(b => b.onclick = async () => {
    try { await api('PUT', `/api/custom_templates/${b.dataset.gitFetch}/git_fetch`); toast('Template fetched again from its repository'); }
    catch (err) { toast(err.message, true); } });
}
// An edge stack's automatic updates: polling and a webhook (a new version for every environment when the commit moved),
// and with ForceUpdate a poll redeploys each environment whose containers drifted from the file.
function edgeAutoUpdateFields(auto) {
  auto = auto || {};
  return `<fieldset><legend>Automatic updates</legend>
    <label for="ge-interval">Poll the repository every (a duration such as 5m or 1h; empty: no polling; ${POLL_NEEDS_A_NAME})</label>
    <input id="ge-interval" name="Interval" placeholder="5m" value="${esc(auto.Interval || '')}">
    <label class="check"><input type="checkbox" id="ge-webhook" name="Webhook" ${auto.Webhook ? 'checked' : ''}> Webhook: a secret URL that deploys the repository's new commit to every environment</label>
    <label class="check"><input type="checkbox" id="ge-force" name="ForceUpdate" ${auto.ForceUpdate ? 'checked' : ''}> Force redeployment (put back containers changed by hand): each poll redeploys the environments whose containers drifted from the file</label>
    <label class="check"><input type="checkbox" id="ge-force-pull" name="ForcePullImage" ${auto.ForcePullImage ? 'checked' : ''}> Re-pull images: every redeploy makes each environment pull its images again</label></fieldset>`;
}
function edgeAutoUpdateOf(data) {
  const auto = {Interval: (data.get('Interval') || '').trim(), Webhook: data.get('Webhook') === 'on',
    ForceUpdate: data.get('ForceUpdate') === 'on', ForcePullImage: data.get('ForcePullImage') === 'on'};
  return auto.Interval || auto.Webhook || auto.ForceUpdate || auto.ForcePullImage ? auto : null;
}
// An edge stack's saved credentials: kept as they are, replaced by the ones typed, or removed (both left empty).
function edgeCredentialFields(config) {
  const auth = config.Authentication;
  return `<fieldset><legend>Credentials</legend>
    <label class="check"><input type="checkbox" id="ge-keep-auth" name="KeepCredentials" checked> Keep the saved credentials${auth ? ` (${esc(auth.Username || 'a deploy key')})` : ' (none)'}</label>
    <div class="row"><div><label for="ge-settings-user">Username</label><input id="ge-settings-user" name="Username" autocomplete="off" value="${esc(auth ? auth.Username : '')}"></div>
    <div><label for="ge-settings-password">Password or token</label><input id="ge-settings-password" name="Password" type="password" autocomplete="new-password"></div></div>
    <p class="muted small">Untick "Keep" to use the username and password typed here, or none when both are empty (a public repository).</p></fieldset>`;
}
// The body of PUT /api/edge_stacks/{id}/git from the settings form (Portainer's RefName and Authentication).
export function edgeGitSettingsBody(data) {
  const body = {RefName: (data.get('RepositoryReferenceName') || '').trim(), AutoUpdate: edgeAutoUpdateOf(data) || {Interval: '', Webhook: false}};
  if (data.get('KeepCredentials') !== 'on') {
    const username = (data.get('Username') || '').trim(), password = data.get('Password') || '';
    if (username || password) body.Authentication = {Username: username, Password: password};
    else body.RepositoryAuthentication = false;
  }
  return body;
}
export function gitEdgeStackForm(groups) {
  return `<div class="card"><h3>New edge stack from a git repository</h3><form id="git-edge">
    <label for="ge-name">Name</label><input id="ge-name" name="Name" required pattern="[a-z0-9][a-z0-9_\\-]*">
    <label for="ge-groups">Edge groups</label><select id="ge-groups" name="EdgeGroups" multiple>${groups.map(g => `<option value="${g.Id}">${esc(g.Name)}</option>`).join('')}</select>
    ${repositoryFields('ge', 'FilePathInRepository')}
    ${edgeAutoUpdateFields(null)}
    <div class="error" role="alert"></div><button class="primary" type="submit">Deploy from git to the groups</button></form></div>`;
}
export function bindGitEdgeStacks(reload) {
  onSubmit($('#git-edge'), async data => {
    const body = {Name: data.get('Name').trim(), DeploymentType: 0, EdgeGroups: data.getAll('EdgeGroups').map(Number),
      ...repositoryOf(data, 'FilePathInRepository')};
    const auto = edgeAutoUpdateOf(data); if (auto) body.AutoUpdate = auto;
    const made = await api('POST', '/api/edge_stacks/create/repository', body);
    if (auto) location.hash = `#/edge/stacks/${made.Id}`; else await reload(); // its page shows the webhook URL to copy
  });
}
// On an edge stack's page: where its project comes from, the deployed commit, the last check, the webhook URL, a
// button that fetches it again and redeploys everywhere, and its git settings.
export function gitEdgeStackCard(stack) {
  const config = stack.GitConfig, check = stack.GitCheck || {}, auto = stack.AutoUpdate || {};
  return `<div class="card" id="git-card"><h3>Git repository</h3>
    <table><tr><th>Repository</th><td><code id="git-repo">${esc(config.URL)}</code></td></tr>
    <tr><th>Reference</th><td><code>${esc(config.ReferenceName || 'HEAD')}</code> · <code>${esc(config.ConfigFilePath)}</code></td></tr>
    <tr><th>Deployed commit</th><td><code id="git-commit" title="${esc(config.ConfigHash)}">${esc(config.ConfigHash.slice(0, 12))}</code> <span class="muted">version ${esc(stack.Version)}</span></td></tr>
    <tr><th>Last checked</th><td id="git-checked">${esc(when(check.Time))}${check.Outcome ? ` <span class="badge ${check.Outcome === 'failed' ? 'exited' : 'running'}">${esc(check.Outcome)}</span>` : ''}
      ${check.Trigger ? `<span class="muted">by ${esc(check.Trigger)}</span>` : ''} ${check.Message ? `<span class="muted">${esc(check.Message)}</span>` : ''}</td></tr>
    <tr><th>Polling</th><td id="git-polling">${auto.Interval ? `every ${esc(auto.Interval)}` : '<span class="muted">off</span>'}</td></tr>
    ${auto.Webhook ? `<tr><th>Webhook</th><td><code class="small webhook-url" id="git-webhook-url">${esc(edgeStackWebhookUrl(auto.Webhook))}</code>
      <button type="button" class="small" id="git-webhook-copy" aria-label="Copy the webhook URL">Copy</button></td></tr>` : ''}</table>
    <div class="error" role="alert" id="git-edge-error"></div>
    <label class="check"><input type="checkbox" id="git-edge-pull"> Pull the images again on each environment</label>
    <button type="button" class="primary" id="git-edge-redeploy">Pull and redeploy</button>
    <form id="git-edge-settings"><h3>Git settings</h3>
      <label for="ge-settings-ref">Reference</label><input id="ge-settings-ref" name="RepositoryReferenceName" value="${esc(config.ReferenceName)}">
      ${edgeCredentialFields(config)}
      ${edgeAutoUpdateFields(auto)}
      <div class="error" role="alert"></div><button type="submit">Save the git settings</button></form></div>`;
}
export function bindGitEdgeStackCard(stack, reload) {
  bindWebhookCopy();
  $('#git-edge-redeploy').onclick = async () => {
    try { const saved = await api('PUT', `/api/edge_stacks/${stack.Id}/git/redeploy`, {PullImage: $('#git-edge-pull').checked}); toast(`Edge stack ${saved.Name}: version ${saved.Version}`); await reload(); }
    catch (err) { $('#git-edge-error').textContent = err.message; } };
  onSubmit($('#git-edge-settings'), async data => {
    await api('PUT', `/api/edge_stacks/${stack.Id}/git`, edgeGitSettingsBody(data));
    toast('Git settings saved'); await reload();
  });
}
