// Unit tests of the data table's filter and sort (ui/table.js: searchIndex, sortedIndex, filteredRows).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {filteredRows, searchIndex, sortedIndex, visibleRows} from '../table.js';

const columns = [
  {key: 'name', label: 'Name', value: c => c.name},
  {key: 'state', label: 'State', value: c => c.state},
  {key: 'created', label: 'Created', value: c => c.created},
  {key: 'ports', label: 'Ports', html: c => `<b>${c.port}</b>`},  // no value: neither searched nor sortable
];
const rows = [
  {name: 'app-10', state: 'running', created: 300, port: 8080},
  {name: 'app-2', state: 'exited', created: 100, port: 8081},
  {name: 'db', state: 'running', created: 200, port: 5432},
];
const names = list => list.map(r => r.name);
const shown = (filter, sort = {key: 'name', asc: true}) => names(visibleRows(searchIndex(rows, columns), columns, filter, sort));

test('names sort in natural order: app-2 before app-10', () => {
  assert.deepEqual(shown(''), ['app-2', 'app-10', 'db']);
  assert.deepEqual(shown('', {key: 'name', asc: false}), ['db', 'app-10', 'app-2']);
});

test('numbers sort as numbers', () => {
  assert.deepEqual(shown('', {key: 'created', asc: true}), ['app-2', 'db', 'app-10']);
});

test('the filter keeps the rows holding every word, in any column and any case', () => {
  assert.deepEqual(shown('RUNNING'), ['app-10', 'db']);
  assert.deepEqual(shown('running app'), ['app-10']);
  assert.deepEqual(shown('  app   exited '), ['app-2']);
  assert.deepEqual(shown('nothing-like-this'), []);
});

test('a column without a value is not searched, and sorting by it keeps the order', () => {
  assert.deepEqual(shown('8080'), []);
  assert.deepEqual(shown('', {key: 'ports', asc: true}), ['app-10', 'app-2', 'db']);
});

test('missing values sort first and never throw', () => {
  const sparse = [{name: 'b'}, {name: undefined}, {name: 'a'}];
  const index = searchIndex(sparse, columns);
  assert.deepEqual(visibleRows(index, columns, '', {key: 'name', asc: true}).map(r => r.name), [undefined, 'a', 'b']);
});

test('a thousand rows are sorted once and each filter keeps that order', () => {
  const many = Array.from({length: 1000}, (_, i) => ({name: `app-${i}`, state: i % 3 ? 'running' : 'exited', created: i}));
  const sorted = sortedIndex(searchIndex(many, columns), columns, {key: 'name', asc: true});
  assert.equal(filteredRows(sorted, '').length, 1000);
  assert.deepEqual(filteredRows(sorted, 'exited app-99').map(r => r.name), ['app-99', 'app-990', 'app-993', 'app-996', 'app-999']);
  const out = visibleRows(searchIndex(many, columns), columns, 'app-99', {key: 'name', asc: true});
  assert.deepEqual(out.map(r => r.name), ['app-99', 'app-990', 'app-991', 'app-992', 'app-993', 'app-994', 'app-995',
    'app-996', 'app-997', 'app-998', 'app-999']);
});
