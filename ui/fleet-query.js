// The fleet view's filters as the query of GET /api/endpoints (Portainer's parameters where it has them), and
// the page a start offset falls on: pure functions, unit-tested in ui/tests/fleet-query.test.js.
export const FLEET_PAGE_SIZE = 50;
// "Last seen" choices: seconds before now, negative for "not seen for".
export const LAST_SEEN = [['', 'any time'], ['300', 'in the last 5 minutes'], ['3600', 'in the last hour'],
  ['86400', 'in the last day'], ['-3600', 'not for an hour'], ['-86400', 'not for a day']];

export function fleetQuery(filters, start = 0, nowSeconds = Math.floor(Date.now() / 1000)) {
  const q = new URLSearchParams({types: '4', start: String(start), limit: String(FLEET_PAGE_SIZE)});
  if (filters.search) q.set('search', filters.search);
  if (filters.status) q.set('status', filters.status);
  if (filters.trust === 'waiting') q.set('edgeDeviceUntrusted', 'true');
  if (filters.trust === 'trusted') q.set('edgeDeviceUntrusted', 'false');
  if (filters.tag) q.set('tagIds', filters.tag);
  if (filters.group) q.set('groupIds', filters.group);
  if (filters.edgeGroup) q.set('edgeGroupIds', filters.edgeGroup);
  if (filters.version) q.set('agentVersions', filters.version);
  const seen = Number(filters.lastSeen || 0);
  if (seen > 0) q.set('lastSeenAfter', String(nowSeconds - seen));
  if (seen < 0) q.set('lastSeenBefore', String(nowSeconds + seen));
  return q.toString();
}
// "51–100 of 10000", and whether there is a page before and after.
export function pageSpan(start, shown, total) {
  return {text: total ? `${start + 1}–${start + shown} of ${total}` : 'none', previous: start > 0, next: start + shown < total};
}
