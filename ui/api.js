// The one way the UI talks to the server: every request goes through `request`, which sends the CSRF token
// on changes, keeps the token the server hands back, ends with the page (its abort signal) and turns an
// error answer into an ApiFailure carrying the server's {message, details} and the HTTP status.
import {pageSignal} from './lifecycle.js';

const CSRF_HEADER = 'X-CSRF-Token';
let csrf = sessionStorage.getItem('csrf') || '';

export class ApiFailure extends Error {
  constructor(message, status, details) { super(message); this.status = status; this.details = details; }
}
async function failureOf(response) {
  const text = await response.text(); let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {message: text}; }
  return new ApiFailure((data && data.message) || response.statusText || `HTTP ${response.status}`, response.status, data && data.details);
}
function rememberCsrf(response) { const t = response.headers.get(CSRF_HEADER); if (t) { csrf = t; sessionStorage.setItem('csrf', t); } }
// After logging out: the next session gets its own token.
export function forgetCsrf() { csrf = ''; sessionStorage.removeItem('csrf'); }

// The fetch primitive: body is JSON unless it is a Blob, FormData or ArrayBuffer (sent as is); `signal`
// replaces the page's own (a stream the page restarts). Resolves with the Response when it is a success.
export async function request(method, path, {body, headers = {}, signal} = {}) {
  const isRaw = body instanceof Blob || body instanceof FormData || body instanceof ArrayBuffer;
  if (body !== undefined && !isRaw) headers['Content-Type'] = 'application/json';
  if (csrf && method !== 'GET' && method !== 'HEAD') headers[CSRF_HEADER] = csrf;
  const r = await fetch(path, {method, headers, credentials: 'same-origin', signal: signal || pageSignal(),
                               body: body === undefined ? undefined : (isRaw ? body : JSON.stringify(body))});
  rememberCsrf(r);
  if (!r.ok) throw await failureOf(r);
  return r;
}
// JSON in, JSON out; throws ApiFailure with the server's {message, details}.
export async function api(method, path, body, headers) {
  const r = await request(method, path, {body, headers});
  const text = await r.text();
  try { return text ? JSON.parse(text) : null; } catch (e) { return text; }
}
// A streamed answer: onChunk(Uint8Array) for each piece as it arrives; resolves when the stream ends.
export async function apiStream(method, path, body, onChunk, headers, signal) {
  return readStream(await request(method, path, {body, headers, signal}), onChunk);
}
// The body of an answer already in hand, piece by piece; resolves when it ends.
export async function readStream(response, onChunk) {
  const reader = response.body.getReader();
  for (;;) { const {done, value} = await reader.read(); if (done) return; onChunk(value); }
}
