// Unit tests of the merged log view's virtualisation (ui/live.js): the bounded lines and their filter (LogLines,
// SeqDeque), which rows the viewport draws (visibleWindow) and which rows change from one frame to the next (rowChanges).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {compileFilter, LogLines, RingBuffer, rowChanges, SeqDeque, visibleWindow} from '../live.js';

const line = text => ({stream: 1, ts: '', time: NaN, text});
const texts = lines => lines.shown().map(l => l.text);
const filled = (capacity, count, make = i => `line ${i}`) => {
  const lines = new LogLines(capacity); for (let i = 0; i < count; i++) lines.push(line(make(i))); return lines;
};
const scanAll = lines => { let rounds = 0; while (lines.scanning) { lines.scan(3); rounds++; } return rounds; };

test('a deque of sequence numbers grows at both ends, stays within its capacity and finds a number by bisection', () => {
  const deque = new SeqDeque(4);
  deque.pushBack(10); deque.pushBack(11); deque.pushFront(7); deque.pushFront(5);
  assert.deepEqual([0, 1, 2, 3].map(i => deque.at(i)), [5, 7, 10, 11]);
  deque.pushFront(1); assert.equal(deque.length, 4, 'full: an older number has no room');
  deque.pushBack(12); assert.deepEqual([0, 1, 2, 3].map(i => deque.at(i)), [7, 10, 11, 12], 'full: the oldest gives way');
  assert.equal(deque.lowerBound(10), 1); assert.equal(deque.lowerBound(8), 1); assert.equal(deque.lowerBound(0), 0);
  assert.equal(deque.lowerBound(13), 4);
  const copy = deque.copy(); deque.popFront(); deque.pushBack(20);
  assert.deepEqual([0, 1, 2, 3].map(i => copy.at(i)), [7, 10, 11, 12], 'a copy is left alone');
});

test('the lines kept are bounded, every line numbered; without a filter the view shows them all', () => {
  const lines = filled(5, 12);
  assert.equal(lines.ring.seq, 12); assert.equal(lines.length, 5);
  assert.deepEqual(texts(lines), ['line 7', 'line 8', 'line 9', 'line 10', 'line 11']);
  assert.equal(lines.seqAt(0), 7); assert.equal(lines.lineAt(4).text, 'line 11');
  assert.equal(lines.indexOf(9), 2); assert.equal(lines.indexOf(3), 0, 'a dropped line: the oldest kept');
  assert.equal(lines.indexOf(99), 5);
});

test('a line is tested once on arrival; matches that drop out of the buffer leave the view', () => {
  const lines = new LogLines(6), tested = [];
  const filter = compileFilter('err', false), counting = {...filter, test: text => { tested.push(text); return filter.test(text); }};
  lines.setFilter(counting, true);
  for (const text of ['ok 1', 'err 2', 'ok 3', 'ERR 4', 'ok 5']) lines.push(line(text));
  assert.deepEqual(texts(lines), ['err 2', 'ERR 4']);
  assert.deepEqual(tested, ['ok 1', 'err 2', 'ok 3', 'ERR 4', 'ok 5'], 'each line once');
  assert.equal(lines.indexOf(3), 1, 'the first match at or after line 3 is line 4');
  for (const text of ['ok 6', 'ok 7', 'err 8']) lines.push(line(text)); // the buffer now starts at line 3
  assert.deepEqual(texts(lines), ['ERR 4', 'err 8']);
  assert.equal(tested.length, 8);
});

test('a new filter tests the kept lines newest first, a budget at a time, while new lines keep arriving', () => {
  const lines = filled(100, 60, i => (i % 10 === 0 ? `warn ${i}` : `line ${i}`));
  lines.setFilter(compileFilter('warn \\d+', true), true);
  assert.ok(lines.scanning); assert.equal(lines.length, 0);
  lines.scan(15); // lines 59 down to 45
  assert.deepEqual(texts(lines), ['warn 50']);
  lines.push(line('warn 60')); lines.push(line('line 61'));
  assert.deepEqual(texts(lines), ['warn 50', 'warn 60'], 'the newest match joins at the back');
  assert.equal(scanAll(lines), 15, '45 more lines, 3 a frame');
  assert.deepEqual(texts(lines), ['warn 0', 'warn 10', 'warn 20', 'warn 30', 'warn 40', 'warn 50', 'warn 60']);
  assert.ok(!lines.scanning);
});

test('a scan stops at the lines that dropped out of the buffer meanwhile', () => {
  const lines = filled(10, 10, i => `hit ${i}`);
  lines.setFilter(compileFilter('hit', false), true);
  lines.scan(2); // lines 9, 8
  for (let i = 10; i < 16; i++) lines.push(line(`miss ${i}`)); // lines 0 to 5 drop out
  scanAll(lines);
  assert.deepEqual(texts(lines), ['hit 6', 'hit 7', 'hit 8', 'hit 9']);
});

test('"only matching lines" off shows every line; an empty or invalid filter shows every line', () => {
  const lines = filled(10, 4, i => (i % 2 ? `odd ${i}` : `even ${i}`));
  lines.setFilter(compileFilter('odd', false), false);
  assert.equal(lines.length, 4); assert.equal(lines.lineAt(1).text, 'odd 1');
  assert.equal(lines.filter.highlight(lines.lineAt(1).text), '<mark>odd</mark> 1');
  lines.setFilter(compileFilter('(', true), true);
  assert.equal(lines.length, 4); assert.ok(!lines.scanning);
  lines.setFilter(compileFilter('', false), true);
  assert.equal(lines.length, 4);
});

test('a paused copy keeps its lines while the live ones move on, and filters on its own', () => {
  const live = filled(5, 5), paused = live.copy();
  for (let i = 5; i < 9; i++) live.push(line(`line ${i}`));
  assert.deepEqual(texts(paused), ['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
  assert.deepEqual(texts(live), ['line 4', 'line 5', 'line 6', 'line 7', 'line 8']);
  paused.setFilter(compileFilter('[13]$', true), true); scanAll(paused);
  assert.deepEqual(texts(paused), ['line 1', 'line 3']);
  assert.equal(live.length, 5, 'the live lines are not filtered by it');
});

test('the ring buffer copy shares nothing that later pushes change', () => {
  const ring = new RingBuffer(3); [1, 2, 3].forEach(n => ring.push(n));
  const copy = ring.copy(); ring.push(4);
  assert.deepEqual(copy.since(), [1, 2, 3]); assert.deepEqual(ring.since(), [2, 3, 4]);
});

test('the viewport draws the rows it shows and a margin each side, never past either end', () => {
  assert.deepEqual(visibleWindow(20000, 17, 0, 340, 8), {first: 0, last: 28});
  assert.deepEqual(visibleWindow(20000, 17, 170, 340, 8), {first: 2, last: 38});
  assert.deepEqual(visibleWindow(20000, 17, 17 * 20000 - 340, 340, 8), {first: 19972, last: 20000}, 'the tail');
  assert.deepEqual(visibleWindow(5, 17, 0, 340, 8), {first: 0, last: 5}, 'fewer lines than the viewport holds');
  assert.deepEqual(visibleWindow(0, 17, 0, 340, 8), {first: 0, last: 0});
  const {first, last} = visibleWindow(1e6, 17, 12345, 800, 8);
  assert.ok(last - first <= Math.ceil(800 / 17) + 1 + 16, 'a screenful however long the list');
});

test('following the tail, only the rows that scrolled in are added and those that scrolled out removed', () => {
  const range = (from, to) => Array.from({length: to - from}, (_, i) => from + i);
  assert.deepEqual(rowChanges(range(100, 130), range(103, 133)), {dropFront: 3, dropBack: 0, addFront: [], addBack: [130, 131, 132]});
  assert.deepEqual(rowChanges(range(100, 130), range(100, 130)), {dropFront: 0, dropBack: 0, addFront: [], addBack: []});
  assert.deepEqual(rowChanges(range(100, 130), range(95, 125)), {dropFront: 0, dropBack: 5, addFront: [95, 96, 97, 98, 99], addBack: []});
  assert.equal(rowChanges(range(100, 130), range(200, 230)), null, 'more than a screenful arrived: all anew');
  assert.equal(rowChanges([], range(0, 10)), null);
  assert.equal(rowChanges(range(0, 10), []), null);
  // Matching lines only: sequence numbers with gaps, the list grown at both ends (a scan adds older ones).
  assert.deepEqual(rowChanges([10, 14, 20], [3, 10, 14]), {dropFront: 0, dropBack: 1, addFront: [3], addBack: []});
  assert.deepEqual(rowChanges([10, 14, 20], [14, 20, 31, 40]), {dropFront: 1, dropBack: 0, addFront: [], addBack: [31, 40]});
});
