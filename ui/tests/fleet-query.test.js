// Unit tests of ui/fleet-query.js (node --test ui/tests/).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {FLEET_PAGE_SIZE, fleetQuery, pageSpan} from '../fleet-query.js';

test('the fleet filters become the server query, one page at a time', () => {
  const q = new URLSearchParams(fleetQuery({search: 'till', status: '1', trust: 'waiting', tag: '3', group: '2',
    edgeGroup: '5', version: '2.19.4', lastSeen: '300'}, 100, 1000000));
  assert.equal(q.get('types'), '4');
  assert.equal(q.get('start'), '100');
  assert.equal(q.get('limit'), String(FLEET_PAGE_SIZE));
  assert.equal(q.get('search'), 'till');
  assert.equal(q.get('status'), '1');
  assert.equal(q.get('edgeDeviceUntrusted'), 'true');
  assert.equal(q.get('tagIds'), '3');
  assert.equal(q.get('groupIds'), '2');
  assert.equal(q.get('edgeGroupIds'), '5');
  assert.equal(q.get('agentVersions'), '2.19.4');
  assert.equal(q.get('lastSeenAfter'), '999700');
  assert.equal(q.get('lastSeenBefore'), null);
});

test('no filter asks for every edge device; "not seen for" asks for those seen before then', () => {
  const q = new URLSearchParams(fleetQuery({trust: 'trusted', lastSeen: '-3600'}, 0, 1000000));
  assert.deepEqual([...q.keys()].sort(), ['edgeDeviceUntrusted', 'lastSeenBefore', 'limit', 'start', 'types']);
  assert.equal(q.get('edgeDeviceUntrusted'), 'false');
  assert.equal(q.get('lastSeenBefore'), '996400');
});

test('the pager says where it is and which way it can go', () => {
  assert.deepEqual(pageSpan(0, 50, 10000), {text: '1–50 of 10000', previous: false, next: true});
  assert.deepEqual(pageSpan(9950, 50, 10000), {text: '9951–10000 of 10000', previous: true, next: false});
  assert.deepEqual(pageSpan(0, 0, 0), {text: 'none', previous: false, next: false});
});
