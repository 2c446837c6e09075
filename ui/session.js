// Who is logged in and where they are: the state every page reads. The router fills it.
import {constants} from './constants.js';

export const session = {
  me: null,               // GET /api/users/me, null until logged in
  publicSettings: null,   // GET /api/settings/public, read once
  currentEnv: null,       // the environment of an env/<id>/... page, for the navigation
};
// Before the constants are read (an error page), nobody is shown administrator links.
export const isAdmin = () => !!session.me && !!constants.UserRoles && session.me.Role === constants.UserRoles.Administrator;
// What the user may do on one environment, by Portainer's authorization names (DockerNodeUpdate, ...): the server
// decides them with the proxy's own rules and roles (GET /api/users/me's EndpointAuthorizations); administrators hold all.
export const isAuthorized = (envId, authorization) => isAdmin() ||
  !!(session.me && ((session.me.EndpointAuthorizations || {})[envId] || {})[authorization]);
export const envIsSwarm = env => !!(env && env.Snapshots && env.Snapshots[0] && env.Snapshots[0].Swarm);
