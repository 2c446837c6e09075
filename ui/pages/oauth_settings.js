// OAuth 2.0 / OpenID Connect settings: the form the Authentication page embeds (renderOAuthSettings), shown on
// its own route (#/settings/oauth) too. PUT /api/settings {AuthenticationMethod, OAuthSettings}; the client
// secret is write-only: GET answers ClientSecretSet, and an empty field keeps the saved secret.
import {api} from '../api.js';
import {formError, onSubmit} from '../feedback.js';
import {esc} from '../format.js';
import {session} from '../session.js';
import {render} from '../shell.js';

const OAUTH = 3; // Portainer's AuthenticationMethod for OAuth
const TEXT_FIELDS = [
  ['DisplayName', 'Name on the login button ("Sign in with …")'],
  ['IssuerURL', 'Issuer URL (endpoints are discovered from /.well-known/openid-configuration)'],
  ['ClientID', 'Client ID'],
  ['Scopes', 'Scopes (space separated; openid is always asked)'],
  ['UserIdentifier', 'User identifier claim (preferred_username, email, sub…)'],
  ['RedirectURI', 'Redirect URI (empty: this server\'s address, e.g. https://portainer.example.org/)'],
  ['AuthorizationURI', 'Authorization URL (empty: discovered)'],
  ['AccessTokenURI', 'Access token URL (empty: discovered)'],
  ['JWKSURI', 'JWKS URL: the provider\'s signing keys (empty: discovered)'],
  ['ResourceURI', 'Resource (userinfo) URL (empty: discovered)'],
  ['LogoutURI', 'Logout URL: where logging out sends the browser (empty: our session ends, nothing more)'],
];

// Embedded in the Authentication page, whose method choice shows it, saving it also makes OAuth the method.
export async function renderOAuthSettings(container, {embedded = false} = {}) {
  const [settings, teams] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/teams')]);
  const o = settings.OAuthSettings || {};
  const form = document.createElement('form'); form.className = 'card'; form.id = 'oauth-settings';
  const input = ([name, label]) => `<label for="oauth-${name}">${esc(label)}</label><input id="oauth-${name}" name="${name}" value="${esc(o[name] || '')}">`;
  form.innerHTML = `<h2>OAuth 2.0 / OpenID Connect</h2>
    <p class="muted">Users sign in with the company's identity provider (authorization code flow with PKCE; the ID token's signature, issuer, audience, expiry and nonce are checked). The administrator can always log in with the internal password.</p>
    ${embedded ? '' : `<p><label class="check"><input type="checkbox" name="enabled" ${settings.AuthenticationMethod === OAUTH ? 'checked' : ''}> Use OAuth sign-in</label></p>`}
    ${TEXT_FIELDS.slice(0, 3).map(input).join('')}
    <label for="oauth-ClientSecret">Client secret</label><input id="oauth-ClientSecret" name="ClientSecret" type="password" autocomplete="new-password" placeholder="${o.ClientSecretSet ? 'saved; leave empty to keep it' : ''}">
    ${TEXT_FIELDS.slice(3).map(input).join('')}
    <label for="oauth-AuthStyle">Client authentication at the token endpoint</label><select id="oauth-AuthStyle" name="AuthStyle">
      ${[[0, 'Automatic (HTTP Basic)'], [2, 'HTTP Basic header'], [1, 'In the request body']].map(([v, l]) => `<option value="${v}" ${o.AuthStyle === v ? 'selected' : ''}>${l}</option>`).join('')}</select>
    <p><label class="check"><input type="checkbox" name="SSO" ${o.SSO !== false ? 'checked' : ''}> Single sign-on (no password asked again while the provider's session lasts)</label></p>
    <p><label class="check"><input type="checkbox" name="OAuthAutoCreateUsers" ${o.OAuthAutoCreateUsers ? 'checked' : ''}> Create users on their first sign-in</label></p>
    <label for="oauth-DefaultTeamID">Team of users created on first sign-in</label><select id="oauth-DefaultTeamID" name="DefaultTeamID">
      <option value="0">No team</option>${teams.map(t => `<option value="${t.Id}" ${o.DefaultTeamID === t.Id ? 'selected' : ''}>${esc(t.Name)}</option>`).join('')}</select>
    <label for="oauth-TeamClaim">Claim listing the user's teams (empty: teams are managed here)</label><input id="oauth-TeamClaim" name="OAuthClaimName" value="${esc((o.TeamMemberships || {}).OAuthClaimName || '')}">
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save OAuth settings</button></p>`;
  container.append(form);
  onSubmit(form, async data => {
    const OAuthSettings = Object.fromEntries(TEXT_FIELDS.map(([name]) => [name, data.get(name).trim()]));
    Object.assign(OAuthSettings, {AuthStyle: +data.get('AuthStyle'), SSO: !!data.get('SSO'), OAuthAutoCreateUsers: !!data.get('OAuthAutoCreateUsers'),
      DefaultTeamID: +data.get('DefaultTeamID'), TeamMemberships: {OAuthClaimName: data.get('OAuthClaimName').trim()}});
    if (data.get('ClientSecret')) OAuthSettings.ClientSecret = data.get('ClientSecret');
    const saved = await api('PUT', '/api/settings', {OAuthSettings, AuthenticationMethod: embedded || data.get('enabled') ? OAUTH : 1});
    session.publicSettings = await api('GET', '/api/settings/public'); // the login button and the users page read it
    form.elements.ClientSecret.value = ''; form.elements.ClientSecret.placeholder = saved.OAuthSettings.ClientSecretSet ? 'saved; leave empty to keep it' : '';
    formError(form, {message: 'Saved.'});
  });
  return form;
}
export async function pageOAuthSettings() {
  session.currentEnv = null;
  const main = render('OAuth settings', '', '<a href="#/settings">Settings</a> / OAuth');
  await renderOAuthSettings(main);
}
