// The pure logic of the live views (merged logs, events): the server's merged stream of many containers' logs
// cut into lines tagged with their container and stream, a ring buffer that bounds memory, stable colours, and
// the text-or-regular-expression filter with its highlight. No DOM here (unit-tested in ui/tests/live.test.js).
import {esc} from './format.js';

// Frames of GET /api/endpoints/{id}/logs (portainer.py's merged_frame): kind, 0, index (2 bytes), length (4 bytes).
export const FRAME_DATA = 0;
export const FRAME_OPEN = 1;
export const FRAME_END = 2;
export function mergedFrameDecoder(onFrame) {
  let pending = new Uint8Array(0);
  return chunk => {
    let joined = chunk;
    if (pending.length) { joined = new Uint8Array(pending.length + chunk.length); joined.set(pending); joined.set(chunk, pending.length); }
    let offset = 0;
    while (joined.length - offset >= 8) {
      const size = new DataView(joined.buffer, joined.byteOffset + offset + 4, 4).getUint32(0);
      if (joined.length - offset - 8 < size) break;
      onFrame(joined[offset], joined[offset + 2] << 8 | joined[offset + 3], joined.subarray(offset + 8, offset + 8 + size));
      offset += 8 + size;
    }
    pending = joined.slice(offset);
  };
}

// Lines of one container's Docker log stream (timestamps=1): [stream, 0, 0, 0, size] frames unless it has a TTY,
// each line "<RFC 3339 time> <text>". onLine({stream: 1 | 2, ts, time (ms), text}) per complete line.
export function logLineSplitter(tty, onLine) {
  const decoders = {1: new TextDecoder(), 2: new TextDecoder()}, partial = {1: '', 2: ''};
  let pending = new Uint8Array(0);
  const text = (stream, bytes) => {
    const parts = (partial[stream] + decoders[stream].decode(bytes, {stream: true})).split('\n'); partial[stream] = parts.pop();
    for (const raw of parts) onLine(parseLogLine(stream, raw));
  };
  return chunk => {
    if (tty) { text(1, chunk); return; }
    const joined = new Uint8Array(pending.length + chunk.length); joined.set(pending); joined.set(chunk, pending.length);
    let offset = 0;
    while (joined.length - offset >= 8) {
      const size = new DataView(joined.buffer, joined.byteOffset + offset + 4, 4).getUint32(0);
      if (joined.length - offset - 8 < size) break;
      text(joined[offset] === 2 ? 2 : 1, joined.subarray(offset + 8, offset + 8 + size));
      offset += 8 + size;
    }
    pending = joined.slice(offset);
  };
}
const STAMPED = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ?(.*)$/s;
export function parseLogLine(stream, raw) {
  const m = raw.match(STAMPED), body = (m ? m[2] : raw).replace(/\r$/, '');
  // Date.parse reads milliseconds: the engine's nanoseconds are cut to three digits first.
  const ts = m ? m[1] : '', time = m ? Date.parse(ts.replace(/(\.\d{3})\d+/, '$1')) : NaN;
  return {stream, ts, time, text: body};
}

// A log time as a key that sorts as time does (the engine trims trailing zeros of the nanoseconds): after a
// reconnection, a line whose key is not past the last one seen of its container is one already shown.
export function timestampKey(ts) {
  const m = /^([^.Z+]+)(?:\.(\d+))?(.*)$/.exec(ts || '');
  return m ? `${m[1]}.${(m[2] || '').padEnd(9, '0')}${m[3]}` : '';
}

// A fixed-size buffer of the last `capacity` items; `seq` numbers every item ever pushed, so a view knows which
// items it has drawn and how many were dropped while it was paused.
export class RingBuffer {
  constructor(capacity) { this.capacity = capacity; this.items = new Array(capacity); this.seq = 0; }
  push(item) { this.items[this.seq % this.capacity] = item; this.seq++; }
  get size() { return Math.min(this.seq, this.capacity); }
  get firstSeq() { return this.seq - this.size; }
  at(seq) { return seq >= this.firstSeq && seq < this.seq ? this.items[seq % this.capacity] : undefined; }
  // Items from sequence number `from` on (the oldest kept when `from` was dropped), up to (not including) `upTo`.
  since(from = 0, upTo = this.seq) { const out = []; for (let s = Math.max(from, this.firstSeq); s < Math.min(upTo, this.seq); s++) out.push(this.items[s % this.capacity]); return out; }
  clear() { this.items = new Array(this.capacity); this.seq = 0; }
}

// A stable colour per container name, one of the 24 hues of app.css's .hue0 ... .hue23 (classes: the page's
// Content-Security-Policy allows no inline style): the same container has it in every view and on every visit.
export const CONTAINER_HUES = 24;
export function containerHue(name) {
  let h = 2166136261;
  for (const c of String(name)) { h ^= c.codePointAt(0); h = Math.imul(h, 16777619); }
  return (h >>> 0) % CONTAINER_HUES;
}

// The filter: plain text (case-insensitive) or, when `regex`, a JavaScript regular expression (case-insensitive).
// Answers {test(text), highlight(text) -> HTML, error}; an empty filter matches every line.
export function compileFilter(query, regex) {
  if (!query) return {test: () => true, highlight: esc, error: ''};
  let re;
  try { re = new RegExp(regex ? query : query.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi'); }
  catch (e) { return {test: () => true, highlight: esc, error: `Not a regular expression: ${e.message}`}; }
  const test = text => { re.lastIndex = 0; return re.test(text); };
  return {test, highlight: text => highlightMatches(text, re), error: ''};
}
// The text, escaped, with every non-empty match of `re` (a global expression) in <mark>.
export function highlightMatches(text, re) {
  let out = '', last = 0, m; re.lastIndex = 0;
  while ((m = re.exec(text)) !== null) {
    if (m[0] === '') { re.lastIndex++; continue; }
    out += esc(text.slice(last, m.index)) + `<mark>${esc(m[0])}</mark>`; last = m.index + m[0].length;
  }
  return out + esc(text.slice(last));
}
// What the download holds: one line per log line, "<time> <container> <stderr?> <text>".
export function logLinesAsText(lines, names, withTimestamps) {
  return lines.map(l => `${withTimestamps && l.ts ? l.ts + ' ' : ''}${names[l.container]}${l.stream === 2 ? ' stderr' : ''} | ${l.text}`).join('\n') + (lines.length ? '\n' : '');
}

// Engine events: the words a user filters them by, and whether one matches the filter {type, action, text}.
export function eventActor(event) {
  const attributes = (event.Actor && event.Actor.Attributes) || {};
  return attributes.name || attributes.image || (event.Actor && event.Actor.ID) || event.id || '';
}
export function eventMatches(event, {type = '', action = '', text = ''}) {
  if (type && event.Type !== type) return false;
  if (action && !String(event.Action || '').toLowerCase().startsWith(action.toLowerCase())) return false;
  if (!text) return true;
  const attributes = (event.Actor && event.Actor.Attributes) || {};
  const haystack = [event.Type, event.Action, event.Actor && event.Actor.ID, ...Object.entries(attributes).map(([k, v]) => `${k}=${v}`)].join(' ').toLowerCase();
  return text.toLowerCase().split(/\s+/).filter(Boolean).every(w => haystack.includes(w));
}
