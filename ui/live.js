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
  // The same items at the same sequence numbers, that later pushes to this buffer leave alone (a paused view).
  copy() { const out = new RingBuffer(this.capacity); out.items = this.items.slice(); out.seq = this.seq; return out; }
}

// Sequence numbers in ascending order, growing at both ends within a fixed capacity: the lines of a ring buffer
// that match the filter (new lines join at the back, a new filter's scan of older lines at the front).
export class SeqDeque {
  constructor(capacity) { this.capacity = capacity; this.items = new Float64Array(capacity); this.head = 0; this.length = 0; }
  at(index) { return this.items[(this.head + index) % this.capacity]; }
  pushBack(seq) { if (this.length === this.capacity) this.popFront(); this.items[(this.head + this.length) % this.capacity] = seq; this.length++; }
  pushFront(seq) { if (this.length === this.capacity) return; this.head = (this.head + this.capacity - 1) % this.capacity; this.items[this.head] = seq; this.length++; }
  popFront() { this.head = (this.head + 1) % this.capacity; this.length--; }
  clear() { this.head = 0; this.length = 0; }
  // The index of the first number at or after `seq` (the length when there is none).
  lowerBound(seq) { let low = 0, high = this.length; while (low < high) { const mid = (low + high) >> 1; if (this.at(mid) < seq) low = mid + 1; else high = mid; } return low; }
  copy() { const out = new SeqDeque(this.capacity); out.items = this.items.slice(); out.head = this.head; out.length = this.length; return out; }
}

// The lines a log view keeps and which of them it shows: a ring buffer of the last `capacity` lines and the
// sequence numbers of those matching the filter. A line is tested once, when it arrives; a new filter tests the
// kept lines newest first, `budget` at a time (scan), so the lines at the tail are ready first and no frame waits
// for the whole buffer. The view reads it by index: length, seqAt(i), lineAt(i), indexOf(seq).
export class LogLines {
  constructor(capacity) {
    this.ring = new RingBuffer(capacity); this.matches = new SeqDeque(capacity);
    this.filter = compileFilter('', false); this.onlyMatching = true; this.scanFrom = -1;
  }
  push(line) {
    const seq = this.ring.seq; this.ring.push(line);
    while (this.matches.length && this.matches.at(0) < this.ring.firstSeq) this.matches.popFront();
    if (this.filter.active && this.filter.test(line.text)) this.matches.pushBack(seq);
  }
  setFilter(filter, onlyMatching) {
    this.filter = filter; this.onlyMatching = onlyMatching; this.matches.clear();
    this.scanFrom = filter.active ? this.ring.seq - 1 : -1;
  }
  get scanning() { return this.filter.active && this.scanFrom >= this.ring.firstSeq; }
  // Tests up to `budget` more of the lines kept before the filter changed; true while some are left.
  scan(budget) {
    const stop = this.ring.firstSeq; let seq = this.scanFrom;
    for (; seq >= stop && budget > 0; seq--, budget--) if (this.filter.test(this.ring.at(seq).text)) this.matches.pushFront(seq);
    this.scanFrom = seq; return this.scanning;
  }
  get showsAll() { return !this.onlyMatching || !this.filter.active; }
  get length() { return this.showsAll ? this.ring.size : this.matches.length; }
  seqAt(index) { return this.showsAll ? this.ring.firstSeq + index : this.matches.at(index); }
  lineAt(index) { return this.ring.at(this.seqAt(index)); }
  // The index of the first shown line at or after sequence number `seq`.
  indexOf(seq) { return this.showsAll ? Math.min(Math.max(seq - this.ring.firstSeq, 0), this.ring.size) : this.matches.lowerBound(seq); }
  shown() { const out = new Array(this.length); for (let i = 0; i < out.length; i++) out[i] = this.lineAt(i); return out; }
  // A copy that lines pushed later leave alone: what a paused view shows (the lines themselves are shared).
  copy() {
    const out = new LogLines(this.ring.capacity); out.ring = this.ring.copy(); out.matches = this.matches.copy();
    out.filter = this.filter; out.onlyMatching = this.onlyMatching; out.scanFrom = this.scanFrom; return out;
  }
}

// A virtualised list of rows of one height: the rows [first, last) in the viewport and `margin` more each side.
export function visibleWindow(length, rowHeight, scrollTop, viewportHeight, margin) {
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - margin);
  return {first: Math.min(first, length), last: Math.min(length, Math.ceil((scrollTop + viewportHeight) / rowHeight) + margin)};
}
// The rows to change when the list drawn (sequence numbers, ascending) becomes the one wanted: how many to remove
// at the front and at the back, and which to add at each end; null when nothing drawn stays (draw them all anew).
// The list only ever changes at its ends (lines arrive, old ones drop, a filter's scan adds older ones), so the rows
// that stay are those drawn between the first and the last wanted.
export function rowChanges(drawn, wanted) {
  if (!drawn.length || !wanted.length) return null;
  const low = wanted[0], high = wanted[wanted.length - 1];
  let dropFront = 0, dropBack = 0;
  while (dropFront < drawn.length && drawn[dropFront] < low) dropFront++;
  while (dropBack < drawn.length - dropFront && drawn[drawn.length - 1 - dropBack] > high) dropBack++;
  if (dropFront + dropBack === drawn.length) return null;
  const keptLow = drawn[dropFront], keptHigh = drawn[drawn.length - 1 - dropBack];
  let front = 0; while (wanted[front] < keptLow) front++;
  let back = wanted.length; while (wanted[back - 1] > keptHigh) back--;
  return {dropFront, dropBack, addFront: wanted.slice(0, front), addBack: wanted.slice(back)};
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
// Answers {test(text), highlight(text) -> HTML, error, active}; an empty (or invalid) filter matches every line.
export function compileFilter(query, regex) {
  if (!query) return {test: () => true, highlight: esc, error: '', active: false};
  let re;
  try { re = new RegExp(regex ? query : query.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi'); }
  catch (e) { return {test: () => true, highlight: esc, error: `Not a regular expression: ${e.message}`, active: false}; }
  const test = text => { re.lastIndex = 0; return re.test(text); };
  return {test, highlight: text => highlightMatches(text, re), error: '', active: true};
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
