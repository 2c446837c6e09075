// Numbers and names the server defines once in Python (roles, environment and registry types, security
// switches...), from GET /api/ui/constants. Read once, after logging in: the login and setup pages need none.
import {api} from './api.js';

export const constants = {};
export async function loadConstants() {
  if (!Object.keys(constants).length) Object.assign(constants, await api('GET', '/api/ui/constants'));
}
