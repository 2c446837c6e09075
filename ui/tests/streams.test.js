// Unit tests of the decoders of the engine's streams (ui/streams.js).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {demuxLogs, dockerStreamDecoder, jsonLines} from '../streams.js';

const bytes = text => new TextEncoder().encode(text);
// One frame of Docker's multiplexed stream: [stream, 0, 0, 0, size big endian] + payload.
function frame(stream, text) {
  const payload = bytes(text), out = new Uint8Array(8 + payload.length);
  out[0] = stream; new DataView(out.buffer).setUint32(4, payload.length); out.set(payload, 8);
  return out;
}
const join = (...parts) => { const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0)); let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; } return out; };

test('progress lines are objects even when a chunk ends in the middle of one', () => {
  const seen = [];
  const feed = jsonLines(m => seen.push(m));
  feed(bytes('{"status":"Pulling"}\n{"id":"a","sta'));
  feed(bytes('tus":"Downloading"}\n\nnot json\n'));
  assert.deepEqual(seen, [{status: 'Pulling'}, {id: 'a', status: 'Downloading'}, {stream: 'not json\n'}]);
});

test('a multiplexed log stream is split into stdout and stderr, across chunk boundaries', () => {
  const seen = [];
  const decode = dockerStreamDecoder(false, (stream, text) => seen.push([stream, text]));
  const all = join(frame(1, 'out line\n'), frame(2, 'err line\n'), frame(1, 'é'));
  decode(all.subarray(0, 5)); decode(all.subarray(5, 20)); decode(all.subarray(20));
  assert.deepEqual(seen, [[1, 'out line\n'], [2, 'err line\n'], [1, 'é']]);
});

test('a TTY stream is plain text on stdout, a character split over two chunks included', () => {
  const seen = [];
  const decode = dockerStreamDecoder(true, (stream, text) => seen.push([stream, text]));
  const text = bytes('hé');
  decode(text.subarray(0, 2)); decode(text.subarray(2));
  assert.deepEqual(seen.map(([s]) => s), [1, 1]);
  assert.equal(seen.map(([, t]) => t).join(''), 'hé');
});

test('logs read in one piece are demultiplexed, and text without frames is kept as it is', () => {
  assert.equal(demuxLogs(join(frame(1, 'a\n'), frame(2, 'b\n'))), 'a\nb\n');
  assert.equal(demuxLogs(bytes('plain tty output\n')), 'plain tty output\n');
});
