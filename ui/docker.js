// The Docker engine of one environment, reached through the server's proxy.
import {apiStream} from './api.js';
import {every, onLeave} from './lifecycle.js';
import {jsonLines} from './streams.js';

export const dockerBase = envId => `/api/endpoints/${envId}/docker`;
// Live updates: the engine's event stream (kept open while the page is shown) calls onChange, at most every
// 300 ms; a slow poll stays as the fallback when events cannot be read.
export function watchEngine(envId, types, onChange, fallbackMs = 15000) {
  let timer = 0;
  const changed = () => { clearTimeout(timer); timer = setTimeout(() => onChange().catch(() => {}), 300); };
  const filters = encodeURIComponent(JSON.stringify({type: types}));
  apiStream('GET', `${dockerBase(envId)}/events?filters=${filters}`, undefined, jsonLines(changed)).catch(() => {});
  onLeave(() => clearTimeout(timer));
  every(fallbackMs, onChange);
}
