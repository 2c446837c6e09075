// Unit tests of the terminal's escape parsing (ui/terminal.js: Screen, the model without the DOM).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {Screen} from '../terminal.js';

function screen(cols = 20, rows = 5) {
  const sent = [];
  const s = new Screen(data => sent.push(data));
  s.resize(cols, rows);
  return {s, sent};
}
const row = (s, y) => s.lines[y].map(c => c[0]).join('').replace(/\s+$/, '');
const classOf = (s, x, y) => s.lines[y][x][1];

test('text, carriage return and line feed', () => {
  const {s} = screen();
  s.write('hello\r\nworld');
  assert.equal(s.text(), 'hello\nworld\n\n\n');
  assert.deepEqual([s.x, s.y], [5, 1]);
});

test('cursor movement and erase sequences', () => {
  const {s} = screen();
  s.write('abcdef\x1b[3D\x1b[K');  // back 3, erase to end of line
  assert.equal(row(s, 0), 'abc');
  s.write('\x1b[3;5Hx');  // row 3, column 5
  assert.equal(row(s, 2), '    x');
  s.write('\x1b[2J');
  assert.equal(s.text().trim(), '');
});

test('a long line wraps at the last column and the screen scrolls into the scrollback', () => {
  const {s} = screen(20, 5);  // the smallest screen resize allows
  s.write('0123456789abcdefghijXY');
  assert.deepEqual([row(s, 0), row(s, 1)], ['0123456789abcdefghij', 'XY']);
  s.write('\r\nline3\r\nline4\r\nline5\r\nline6');
  assert.equal(row(s, 4), 'line6');
  assert.equal(s.scrollback.length, 1);
  assert.equal(s.scrollback[0].map(c => c[0]).join(''), '0123456789abcdefghij');
});

test('colours and bold become CSS classes; bright bold colours for the 8 basic ones', () => {
  const {s} = screen();
  s.write('\x1b[1;31mR\x1b[0m\x1b[42mG\x1b[38;5;12mB\x1b[7mI');
  assert.equal(classOf(s, 0, 0), 'fg9 b');
  assert.equal(classOf(s, 1, 0), 'bg2');
  assert.equal(classOf(s, 2, 0), 'fg12 bg2');
  assert.equal(classOf(s, 3, 0), 'bg12 fg2');
});

test('the alternate screen (vi, top) is left with the main screen as it was', () => {
  const {s} = screen();
  s.write('shell prompt');
  s.write('\x1b[?1049h\x1b[Hfull screen app');
  assert.equal(row(s, 0), 'full screen app');
  s.write('\x1b[?1049l');
  assert.equal(row(s, 0), 'shell prompt');
});

test('a cursor position query is answered with the position', () => {
  const {s, sent} = screen();
  s.write('ab\r\ncd\x1b[6n');
  assert.deepEqual(sent, ['\x1b[2;3R']);
});

test('an OSC title and a charset designation are consumed, not printed', () => {
  const {s} = screen();
  s.write('\x1b]0;my title\x07\x1b(Bok');
  assert.equal(row(s, 0), 'ok');
});

test('an escape sequence split over two writes is parsed as one', () => {
  const {s} = screen();
  s.write('x\x1b[');
  s.write('31my');
  assert.equal(row(s, 0), 'xy');
  assert.equal(classOf(s, 1, 0), 'fg1');
});
