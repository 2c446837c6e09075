// Unit tests of ui/format.js (node --test ui/tests/).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {containerName, esc, fmtAgo, fmtBytes, fmtDate, shortId} from '../format.js';

test('text from the engine cannot become HTML', () => {
  assert.equal(esc(`<img src=x onerror="alert('1')">&`), '&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;');
  assert.equal(esc(null), '');
  assert.equal(esc(undefined), '');
  assert.equal(esc(0), '0');
});

test('sizes are shown in the largest unit under 1024, with one decimal below 10', () => {
  assert.equal(fmtBytes(0), '0 B');
  assert.equal(fmtBytes(512), '512 B');
  assert.equal(fmtBytes(1536), '1.5 KB');
  assert.equal(fmtBytes(200 * 1024 * 1024), '200 MB');
  assert.equal(fmtBytes(3 * 1024 ** 5), '3072 TB');
  assert.equal(fmtBytes(undefined), '');
});

test('a time is shown as how long ago it was, from seconds or an ISO date', () => {
  const now = Date.now() / 1000;
  assert.equal(fmtAgo(now - 5), '5 s ago');
  assert.equal(fmtAgo(now - 125), '2 min ago');
  assert.equal(fmtAgo(now - 3 * 3600 - 10), '3 h ago');
  assert.equal(fmtAgo(new Date((now - 2 * 86400 - 10) * 1000).toISOString()), '2 days ago');
  assert.equal(fmtAgo(now + 100), '0 s ago');  // a clock ahead of the browser's is "just now", not negative
});

test('a missing or unreadable date is shown as nothing', () => {
  assert.equal(fmtDate(0), '');
  assert.equal(fmtDate('not a date'), '');
  assert.equal(fmtDate(1700000000), new Date(1700000000 * 1000).toLocaleString());
});

test('ids are shortened to 12 characters without their sha256: prefix, names without their slash', () => {
  assert.equal(shortId('sha256:0123456789abcdef0123'), '0123456789ab');
  assert.equal(shortId(undefined), '');
  assert.equal(containerName({Names: ['/web-1']}), 'web-1');
  assert.equal(containerName({Name: '/db'}), 'db');
  assert.equal(containerName({}), '');
});
