// The shell around every page: navigation, theme, top bar.
import {api, forgetCsrf} from './api.js';
import {$} from './dom.js';
import {esc} from './format.js';
import {envIsSwarm, isAdmin, session} from './session.js';

// The element every page draws into.
export const $app = document.getElementById('app');
// Feature pages add their links here: GLOBAL_NAV for server-wide pages, ENV_NAV for pages of one environment
// (`swarm: true` shows a link only on a Swarm manager; `admin: true` only to administrators).
const GLOBAL_NAV = [
  {href: '#/home', label: 'Home'},
  {href: '#/users', label: 'Users', admin: true},
  {href: '#/teams', label: 'Teams'},
  {href: '#/resource-controls', label: 'Sharing', admin: true},
  {href: '#/activity', label: 'Activity', admin: true},
  {href: '#/backup', label: 'Backup', admin: true},
  {href: '#/settings', label: 'Settings', admin: true},
  {href: '#/groups', label: 'Groups', admin: true},
  {href: '#/tags', label: 'Tags', admin: true},
  {href: '#/registries', label: 'Registries'},
  {href: '#/stacks', label: 'Stacks'},
  {href: '#/templates', label: 'App templates'},
  {href: '#/edge/stacks', label: 'Edge stacks', admin: true},
  {href: '#/edge/groups', label: 'Edge groups', admin: true},
  {href: '#/edge/jobs', label: 'Edge jobs', admin: true},
  {href: '#/edge/devices', label: 'Edge devices', admin: true},
  {href: '#/edge/settings', label: 'Edge settings', admin: true},
  {href: '#/edge/updates', label: 'Agent updates', admin: true},
  {href: '#/account', label: 'My account'},
];
export const ENV_NAV = [
  {path: 'dashboard', label: 'Dashboard'},
  {path: 'containers', label: 'Containers'},
  {path: 'images', label: 'Images'},
  {path: 'volumes', label: 'Volumes'},
  {path: 'networks', label: 'Networks'},
  {path: 'events', label: 'Events'},
  {path: 'logs', label: 'Log viewer'},
  {path: 'services', label: 'Services', swarm: true},
  {path: 'nodes', label: 'Nodes', swarm: true},
  {path: 'configs', label: 'Configs', swarm: true},
  {path: 'secrets', label: 'Secrets', swarm: true},
  {path: 'access', label: 'Access', admin: true},
  {path: 'security', label: 'Security settings', admin: true},
];
export function applyTheme() {
  const saved = localStorage.getItem('theme');
  const dark = saved ? saved === 'dark' : window.matchMedia && matchMedia('(prefers-color-scheme: dark)').matches;
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
}
function toggleTheme() { localStorage.setItem('theme', document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark'); applyTheme(); }
export function shell(content, crumbs = '') {
  const hash = location.hash.split('?')[0];
  const link = (href, label) => `<a href="${href}" class="${hash === href || hash.startsWith(href + '/') ? 'active' : ''}">${esc(label)}</a>`;
  const envLinks = session.currentEnv ? `<div class="group">Environment</div><div class="envname" title="${esc(session.currentEnv.Name)}">${esc(session.currentEnv.Name)}</div>` +
    ENV_NAV.filter(n => (!n.swarm || envIsSwarm(session.currentEnv)) && (!n.admin || isAdmin()))
      .map(n => link(`#/env/${session.currentEnv.Id}/${n.path}`, n.label)).join('') : '';
  return `<div class="layout"><nav class="side" id="side" aria-label="Main"><div class="brand">portainer.py<button class="menu" id="menu-close" aria-label="Close menu">&times;</button></div>
    ${GLOBAL_NAV.filter(n => !n.admin || isAdmin()).map(n => link(n.href, n.label)).join('')}${envLinks}</nav>
    <div><div class="top"><button class="menu" id="menu" aria-controls="side" aria-label="Menu">&#9776;</button>
    <span class="crumbs">${crumbs}</span>
    <button id="theme" title="Switch between light and dark theme">Theme</button>
    <span class="muted who">${esc(session.me && session.me.Username)}</span><button id="logout">Log out</button></div>
    <main id="main">${content}</main></div></div>`;
}
export function bindShell() {
  $('#theme').addEventListener('click', toggleTheme);
  $('#menu').addEventListener('click', () => { $('#side').classList.add('open'); $('#side a').focus(); });
  $('#menu-close').addEventListener('click', () => { $('#side').classList.remove('open'); $('#menu').focus(); });
  $('#side').addEventListener('keydown', e => { if (e.key === 'Escape') $('#menu-close').click(); });
  $('#logout').addEventListener('click', async () => {
    await api('POST', '/api/auth/logout').catch(() => {});
    session.me = null; forgetCsrf();
    const providerLogout = session.publicSettings && session.publicSettings.OAuthLogoutURI; // ends the provider's session too
    if (providerLogout) location.assign(providerLogout); else location.hash = '#/login';
  });
}
// Render a page inside the shell; answers the <main> element.
export function render(title, content, crumbs) {
  document.title = `${title} · portainer.py`;
  $app.innerHTML = shell(content, crumbs ?? esc(title));
  bindShell();
  return $('#main');
}
export const envCrumbs = (envId, ...parts) => [`<a href="#/home">Home</a>`, `<a href="#/env/${envId}/dashboard">${esc(session.currentEnv ? session.currentEnv.Name : envId)}</a>`, ...parts].join(' / ');
