// The router: which page a hash route (#/env/1/containers) shows, and the login or setup page before any.
import {api, ApiFailure, request} from './api.js';
import {loadConstants} from './constants.js';
import {esc} from './format.js';
import {leavePage} from './lifecycle.js';
import {pageEndpointAccess, pageEndpointSecurity, pageGroupAccess, pageResourceControls} from './pages/access.js';
import {pageActivity} from './pages/activity.js';
import {finishOAuthSignIn, pageLogin, pageSetup} from './pages/auth.js';
import {pageAuthentication} from './pages/authentication.js';
import {pageBackup, pageRestoreFresh} from './pages/backup.js';
import {pageContainer} from './pages/container.js';
import {pageContainerCreate, pageContainers} from './pages/containers.js';
import {pageDashboard} from './pages/dashboard.js';
import {pageEdgeGroups, pageEdgeJob, pageEdgeJobs, pageEdgeStack, pageEdgeStacks} from './pages/edge.js';
import {pageEdgeDevices, pageEdgeSettings, pageEdgeUpdates} from './pages/edge-fleet.js';
import {pageEnvironmentForm, pageHome, pageTags} from './pages/environments.js';
import {pageEvents} from './pages/events.js';
import {pageGroup, pageGroups} from './pages/groups.js';
import {pageImage} from './pages/image.js';
import {pageImages} from './pages/images.js';
import {pageLogs} from './pages/logs.js';
import {pageNetwork} from './pages/network.js';
import {pageNetworks} from './pages/networks.js';
import {pageOAuthSettings} from './pages/oauth_settings.js';
import {pageRegistries, pageRegistryBrowse} from './pages/registries.js';
import {pageStackFromGit} from './pages/stack-git.js';
import {pageStackEditor, pageStacks} from './pages/stacks.js';
import {pageSwarm} from './pages/swarm.js';
import {pageNode} from './pages/nodes.js';
import {pageService, pageServiceCreate} from './pages/services.js';
import {pageSwarmData, pageSwarmDataCreate} from './pages/swarm-data.js';
import {pageTeam, pageTeams} from './pages/teams.js';
import {pageTemplates} from './pages/templates.js';
import {pageAccount, pageSettings, pageUsers} from './pages/users.js';
import {pageVolume} from './pages/volume.js';
import {pageBrowse, pageVolumes} from './pages/volumes.js';
import {session} from './session.js';
import {applyTheme, render} from './shell.js';

// ---- router: hash route -> page function ---------------------------------------------------------------------
// Each entry: [pattern after '#/', page function(...captured groups)]. `env/(\d+)/...` routes load the environment
// first (session.currentEnv) for the navigation. A new page adds its route here.
const UI_ROUTES = [
  ['home', pageHome],
  ['tags', pageTags],
  ['groups', pageGroups],
  ['groups/(\\d+)', pageGroup],
  ['groups/(\\d+)/access', pageGroupAccess],
  ['environments/new', () => pageEnvironmentForm(null)],
  ['environments/(\\d+)/edit', pageEnvironmentForm],
  ['env/(\\d+)/dashboard', pageDashboard],
  ['env/(\\d+)/containers', pageContainers],
  ['env/(\\d+)/containers/new', pageContainerCreate],
  ['env/(\\d+)/containers/([0-9a-zA-Z_.-]+)', pageContainer],
  ['env/(\\d+)/containers/([0-9a-zA-Z_.-]+)/(overview|logs|stats|console|inspect)', pageContainer],
  ['env/(\\d+)/images', pageImages],
  ['env/(\\d+)/volumes', pageVolumes],
  ['env/(\\d+)/volumes/([^/]+)/browse', (id, volume) => pageBrowse(id, decodeURIComponent(volume), new URLSearchParams(location.hash.split('?')[1] || '').get('node') || '', '/')],
  ['env/(\\d+)/access', pageEndpointAccess],
  ['env/(\\d+)/security', pageEndpointSecurity],
  ['env/(\\d+)/networks', pageNetworks],
  ['env/(\\d+)/(services|nodes|configs|secrets)', pageSwarm],
  ['env/(\\d+)/services/new', pageServiceCreate],
  ['env/(\\d+)/services/([^/]+)', pageService],
  ['env/(\\d+)/services/([^/]+)/(overview|tasks|logs|inspect)', pageService],
  ['env/(\\d+)/nodes/([^/]+)', pageNode],
  ['env/(\\d+)/(configs|secrets)/new', pageSwarmDataCreate],
  ['env/(\\d+)/(configs|secrets)/([^/]+)', pageSwarmData],
  // Day-2 operations (issue 19): events, detail pages, the merged log view.
  ['env/(\\d+)/events', pageEvents],
  ['env/(\\d+)/logs', pageLogs],
  ['env/(\\d+)/images/([^/]+)', (id, image) => pageImage(id, decodeURIComponent(image))],
  ['env/(\\d+)/networks/([^/]+)', (id, network) => pageNetwork(id, decodeURIComponent(network))],
  ['env/(\\d+)/volumes/([^/]+)', (id, volume) => pageVolume(id, decodeURIComponent(volume))],
  ['users', pageUsers],
  ['teams', pageTeams],
  ['teams/(\\d+)', pageTeam],
  ['resource-controls', pageResourceControls],
  ['activity', () => pageActivity('logs')],
  ['activity/auth', () => pageActivity('authlogs')],
  ['backup', pageBackup],
  ['settings', pageSettings],
  ['settings/authentication', pageAuthentication],
  ['settings/oauth', pageOAuthSettings],
  ['registries', () => pageRegistries()],
  ['registries/(\\d+)', pageRegistryBrowse],
  ['account', pageAccount],
  ['stacks', pageStacks],
  ['stacks/new', () => pageStackEditor(null)],
  ['stacks/new/git', pageStackFromGit],
  ['stacks/(\\d+)', id => pageStackEditor(id)],
  ['stacks/adopt/(\\d+)/(.+)', (ep, name) => pageStackEditor(null, {ep, name: decodeURIComponent(name)})],
  ['templates', pageTemplates],
  ['edge/stacks', pageEdgeStacks],
  ['edge/stacks/(\\d+)', pageEdgeStack],
  ['edge/groups', pageEdgeGroups],
  ['edge/jobs', pageEdgeJobs],
  ['edge/jobs/(\\d+)', pageEdgeJob],
  ['edge/devices', pageEdgeDevices],
  ['edge/settings', pageEdgeSettings],
  ['edge/updates', pageEdgeUpdates],
];
export async function route() {
  leavePage(); applyTheme();
  if (location.search) await finishOAuthSignIn();
  const hash = location.hash || '#/home', path = hash.slice(2).split('?')[0];
  try {
    if (path === 'login' || path === 'setup') session.me = null;
    if (!session.me) { // first load, or after logging in or out: later navigations cost no extra round trip
      session.publicSettings = session.publicSettings || await api('GET', '/api/settings/public');
      const adminExists = await request('GET', '/api/users/admin/check').then(() => true,
        err => { if (!(err instanceof ApiFailure)) throw err; return err.status !== 404; });
      if (!adminExists) return await (path === 'restore' ? pageRestoreFresh() : pageSetup());
      if (path === 'login' || path === 'setup') return await pageLogin();
      session.me = await api('GET', '/api/users/me');
      await loadConstants();
    }
    const match = UI_ROUTES.map(([pattern, page]) => [path.match(new RegExp(`^${pattern}$`)), page]).find(([m]) => m);
    if (!match) { location.replace('#/home'); return; }
    const [m, page] = match, args = m.slice(1);
    if (path.startsWith('env/')) { session.currentEnv = await api('GET', `/api/endpoints/${args[0]}`); }
    else session.currentEnv = null;
    await page(...args);
  } catch (err) {
    if (err.name === 'AbortError') return;
    if (err.status === 401) { session.me = null; if (path !== 'login') sessionStorage.setItem('after-login', hash); location.hash = '#/login'; return; }
    render('Error', `<div class="card"><h2>Something went wrong</h2><p class="error" role="alert">${esc(err.message)}</p>
      ${err.details ? `<p class="muted">${esc(err.details)}</p>` : ''}<p><a href="#/home">Back to the environments</a></p></div>`);
  }
}
