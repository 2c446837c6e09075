// The Docker engine of one environment, reached through the server's proxy.
import {readStream, request} from './api.js';
import {every, onLeave} from './lifecycle.js';
import {jsonLines} from './streams.js';

export const dockerBase = envId => `/api/endpoints/${envId}/docker`;
// Live updates: the engine's event stream (kept open while the page is shown) calls onChange, at most every
// 300 ms; a slow poll stays as the fallback when events cannot be read. A change made after the page's first
// load but before the engine began sending events is caught by one more onChange once the stream has opened.
export function watchEngine(envId, types, onChange, fallbackMs = 15000) {
  let timer = 0;
  const changed = () => { clearTimeout(timer); timer = setTimeout(() => onChange().catch(() => {}), 300); };
  const filters = encodeURIComponent(JSON.stringify({type: types}));
  request('GET', `${dockerBase(envId)}/events?filters=${filters}`)
    .then(response => { changed(); return readStream(response, jsonLines(changed)); }).catch(() => {});
  onLeave(() => clearTimeout(timer));
  every(fallbackMs, onChange);
}
