// Unit tests of the live views' logic (ui/live.js): merged frames, log lines, ring buffer, colours, filter.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {compileFilter, containerHue, eventActor, eventMatches, FRAME_DATA, FRAME_END, FRAME_OPEN, highlightMatches,
  logLineSplitter, logLinesAsText, mergedFrameDecoder, parseLogLine, RingBuffer, timestampKey} from '../live.js';

const bytes = text => new TextEncoder().encode(text);
const join = (...parts) => { const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0)); let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; } return out; };
function dockerFrame(stream, text) {
  const payload = bytes(text), out = new Uint8Array(8 + payload.length);
  out[0] = stream; new DataView(out.buffer).setUint32(4, payload.length); out.set(payload, 8); return out;
}
function mergedFrame(kind, index, payload) {
  const out = new Uint8Array(8 + payload.length); out[0] = kind; out[2] = index >> 8; out[3] = index & 255;
  new DataView(out.buffer).setUint32(4, payload.length); out.set(payload, 8); return out;
}

test('merged frames come out whole, in order, however the chunks cut them', () => {
  const stream = join(mergedFrame(FRAME_OPEN, 0, bytes('{"Name":"a"}')), mergedFrame(FRAME_DATA, 300, bytes('xyz')),
    mergedFrame(FRAME_END, 1, new Uint8Array(0)));
  for (let cut = 1; cut < stream.length; cut++) {
    const seen = [], feed = mergedFrameDecoder((kind, index, payload) => seen.push([kind, index, new TextDecoder().decode(payload)]));
    feed(stream.subarray(0, cut)); feed(stream.subarray(cut));
    assert.deepEqual(seen, [[FRAME_OPEN, 0, '{"Name":"a"}'], [FRAME_DATA, 300, 'xyz'], [FRAME_END, 1, '']], `cut at ${cut}`);
  }
});

test('log lines keep their stream, time and text across frames and chunks', () => {
  const lines = [], feed = logLineSplitter(false, l => lines.push(l));
  const raw = join(dockerFrame(1, '2026-12-01T10:00:00.123456789Z hello\n2026-12-01T10:00:01.5Z par'), dockerFrame(2, '2026-12-01T10:00:02Z oops\r\n'),
    dockerFrame(1, 'tial\n'));
  feed(raw.subarray(0, 11)); feed(raw.subarray(11));
  assert.deepEqual(lines.map(l => [l.stream, l.ts, l.text]), [[1, '2026-12-01T10:00:00.123456789Z', 'hello'],
    [2, '2026-12-01T10:00:02Z', 'oops'], [1, '2026-12-01T10:00:01.5Z', 'partial']]);
  assert.equal(lines[0].time, Date.UTC(2026, 11, 1, 10, 0, 0, 123));
});

test('a TTY container is one stream of text, split at newlines even inside a multi-byte character', () => {
  const lines = [], feed = logLineSplitter(true, l => lines.push(l)), raw = bytes('2026-12-01T10:00:00Z café\nno time\n');
  feed(raw.subarray(0, 25)); feed(raw.subarray(25));
  assert.deepEqual(lines.map(l => [l.stream, l.text]), [[1, 'café'], [1, 'no time']]);
  assert.ok(Number.isNaN(parseLogLine(1, 'no time').time));
});

test('the ring buffer keeps the last items and says which were dropped', () => {
  const ring = new RingBuffer(3);
  for (let i = 0; i < 5; i++) ring.push(i);
  assert.equal(ring.size, 3); assert.equal(ring.seq, 5); assert.equal(ring.firstSeq, 2);
  assert.deepEqual(ring.since(), [2, 3, 4]); assert.deepEqual(ring.since(4), [4]); assert.deepEqual(ring.since(5), []);
  assert.equal(ring.at(1), undefined); assert.equal(ring.at(3), 3);
  ring.clear(); assert.deepEqual(ring.since(), []);
});

test('a container has the same colour every time, and different names mostly differ', () => {
  assert.equal(containerHue('web-1'), containerHue('web-1'));
  const hues = new Set(['web-1', 'web-2', 'db-1', 'cache-1', 'worker-1', 'worker-2'].map(containerHue));
  assert.ok(hues.size >= 4, [...hues].join());
  assert.ok([...hues].every(h => Number.isInteger(h) && h >= 0 && h < 24));
});

test('the filter takes plain text or a regular expression and highlights matches, escaped', () => {
  const plain = compileFilter('a.b', false);
  assert.ok(plain.test('xA.Bx')); assert.ok(!plain.test('aXb'));
  assert.equal(plain.highlight('<a.b>'), '&lt;<mark>a.b</mark>&gt;');
  const regex = compileFilter('err(or)? \\d+', true);
  assert.ok(regex.test('ERROR 42')); assert.ok(regex.test('err 1')); assert.ok(!regex.test('error x'));
  assert.equal(regex.highlight('err 1 & error 22'), '<mark>err 1</mark> &amp; <mark>error 22</mark>');
  assert.equal(regex.test('err 5'), true, 'a global expression tests the same twice');
  assert.match(compileFilter('(', true).error, /Not a regular expression/);
  assert.equal(compileFilter('', true).test('anything'), true);
  assert.equal(highlightMatches('abc', /x*/g), 'abc', 'empty matches highlight nothing and end');
});

test('the download names each line\'s container and marks stderr', () => {
  const lines = [{container: 0, stream: 1, ts: 't1', text: 'up'}, {container: 1, stream: 2, ts: 't2', text: 'bad'}];
  assert.equal(logLinesAsText(lines, ['web', 'db'], true), 't1 web | up\nt2 db stderr | bad\n');
  assert.equal(logLinesAsText(lines, ['web', 'db'], false), 'web | up\ndb stderr | bad\n');
  assert.equal(logLinesAsText([], [], true), '');
});

test('events match by type, action prefix and the words of their actor', () => {
  const event = {Type: 'container', Action: 'exec_start: sh', Actor: {ID: 'abc123', Attributes: {name: 'web-1', image: 'nginx'}}};
  assert.equal(eventActor(event), 'web-1');
  assert.ok(eventMatches(event, {type: 'container', action: 'exec_start', text: 'web nginx'}));
  assert.ok(!eventMatches(event, {type: 'image'}));
  assert.ok(!eventMatches(event, {action: 'start'}));
  assert.ok(!eventMatches(event, {text: 'db'}));
  assert.equal(eventActor({Type: 'network', Actor: {ID: 'n1', Attributes: {}}}), 'n1');
});

test('log times compare as times once the nanoseconds are padded', () => {
  assert.equal(timestampKey('2026-12-01T10:00:00.5Z'), '2026-12-01T10:00:00.500000000Z');
  assert.ok(timestampKey('2026-12-01T10:00:00.5Z') > timestampKey('2026-12-01T10:00:00.123456789Z'));
  assert.ok(timestampKey('2026-12-01T10:00:01Z') > timestampKey('2026-12-01T10:00:00.999Z'));
  assert.equal(timestampKey(''), '');
});

test('a ring buffer answers the items between two sequence numbers', () => {
  const ring = new RingBuffer(4);
  for (const n of [1, 2, 3, 4, 5, 6]) ring.push(n);
  assert.deepEqual(ring.since(), [3, 4, 5, 6]);
  assert.deepEqual(ring.since(0, 4), [3, 4]);
  assert.deepEqual(ring.since(3, 5), [4, 5]);
  assert.deepEqual(ring.since(5, 99), [6]);
});
