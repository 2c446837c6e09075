// Pages: the first administrator (a fresh server) and the login.
import {api} from '../api.js';
import {$} from '../dom.js';
import {onSubmit, showError} from '../feedback.js';
import {esc} from '../format.js';
import {session} from '../session.js';
import {$app} from '../shell.js';

export async function pageSetup() {
  const pub = session.publicSettings || await api('GET', '/api/settings/public');
  document.title = 'Set up · portainer.py';
  $app.innerHTML = `<div class="card auth"><div class="brand">portainer.py</div><h2>Create the administrator</h2><form id="setup" novalidate>
    <label for="setup-user">Username</label><input id="setup-user" name="Username" value="admin" autocomplete="username" required>
    <label for="setup-password">Password (12 characters or more)</label><input id="setup-password" type="password" name="Password" autocomplete="new-password" required data-error-hint="password">
    <label for="setup-confirm">Confirm password</label><input id="setup-confirm" type="password" name="Confirm" autocomplete="new-password" required>
    ${pub.AnalyticsAvailable ? `<label class="check"><input type="checkbox" id="analytics" name="analytics"> Send anonymous usage statistics (off unless you tick it)</label>` : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create user</button></p></form>
    <p><a href="#/restore">Restore from a backup instead</a></p></div>`;
  const form = $('#setup'); $('#setup-password').focus();
  onSubmit(form, async data => {
    if (data.get('Password') !== data.get('Confirm')) return showError(form, new Error('The passwords do not match'), 'Confirm');
    const credentials = {Username: data.get('Username'), Password: data.get('Password')};
    await api('POST', '/api/users/admin/init', credentials);
    await api('POST', '/api/auth', credentials);
    if (data.get('analytics')) await api('PUT', '/api/settings', {EnableTelemetry: true});
    location.hash = '#/home';
  });
}
// Where a failed OAuth sign-in leaves its message for the login page (the browser came back from the provider).
const OAUTH_ERROR_KEY = 'oauth-error';
export async function pageLogin() {
  const pub = session.publicSettings || await api('GET', '/api/settings/public');
  document.title = 'Log in · portainer.py';
  // With OAuth on, the provider's button comes first; the password form stays (the administrator's way in).
  const oauth = pub.OAuthLoginURI ? `<p><a class="button primary" id="oauth-login" href="${esc(pub.OAuthLoginURI)}">Sign in with ${esc(pub.OAuthDisplayName)}</a></p>
    <p class="error" role="alert" id="oauth-error"></p><p class="muted">Or log in with a password of this server:</p>` : '<p class="error" role="alert" id="oauth-error"></p>';
  $app.innerHTML = `<div class="card auth"><div class="brand">portainer.py</div><h2>Log in</h2>${oauth}<form id="login">
    <label for="u">Username</label><input id="u" name="Username" autocomplete="username" required>
    <label for="p">Password</label><input id="p" name="Password" type="password" autocomplete="current-password" required>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Log in</button></p></form></div>`;
  $('#oauth-error').textContent = sessionStorage.getItem(OAUTH_ERROR_KEY) || ''; sessionStorage.removeItem(OAUTH_ERROR_KEY);
  const form = $('#login'); $('#u').focus();
  onSubmit(form, async data => {
    await api('POST', '/api/auth', {Username: data.get('Username'), Password: data.get('Password')});
    const next = sessionStorage.getItem('after-login') || '#/home'; sessionStorage.removeItem('after-login');
    location.hash = next === '#/login' ? '#/home' : next;
  });
}
// The provider sends the browser back to the redirect URI with ?code=…&state=… (or ?error=…): both go to the
// server once (POST /api/auth/oauth/validate), and leave the address bar and the history at once.
export async function finishOAuthSignIn() {
  const params = new URLSearchParams(location.search);
  const code = params.get('code'), error = params.get('error');
  if (!code && !error) return;
  history.replaceState(null, '', location.pathname + '#/login');
  if (error) { sessionStorage.setItem(OAUTH_ERROR_KEY, `The provider did not sign you in: ${params.get('error_description') || error}`); return; }
  try {
    await api('POST', '/api/auth/oauth/validate', {code, state: params.get('state') || ''});
    session.me = null;
    const next = sessionStorage.getItem('after-login') || '#/home'; sessionStorage.removeItem('after-login');
    history.replaceState(null, '', location.pathname + (next === '#/login' ? '#/home' : next));
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    sessionStorage.setItem(OAUTH_ERROR_KEY, err.message + (err.details ? ` (${err.details})` : ''));
  }
}
