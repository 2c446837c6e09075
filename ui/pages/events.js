// Page: the engine's events of one environment, live (GET /events streamed through the proxy), filterable by
// type (the engine's own filter), action and actor (in the page). The last MAX_EVENTS are kept; a dropped
// connection resumes from the last event shown.
import {ApiFailure, apiStream} from '../api.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {esc, fmtDate} from '../format.js';
import {eventActor, eventMatches, RingBuffer} from '../live.js';
import {onLeave} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';
import {jsonLines} from '../streams.js';

const MAX_EVENTS = 2000;
const MAX_SHOWN = 500;
const EVENT_TYPES = ['container', 'image', 'volume', 'network', 'daemon', 'plugin', 'service', 'node', 'secret', 'config'];
const HISTORY = [['900', 'last 15 minutes'], ['3600', 'last hour'], ['86400', 'last day'], ['0', 'from now on']];

export async function pageEvents(envId) {
  render('Events', `<div class="toolbar"><h2>Events</h2><span class="spacer"></span><span class="muted small" id="events-state"></span></div>
    <div class="card"><form class="toolbar" id="events-filter">
    <label class="check" for="ev-type">Type <select id="ev-type" name="type"><option value="">all</option>${EVENT_TYPES.map(t => `<option>${t}</option>`).join('')}</select></label>
    <label class="check" for="ev-since">Since <select id="ev-since" name="since">${HISTORY.map(([v, l]) => `<option value="${v}">${l}</option>`).join('')}</select></label>
    <input class="filter" id="ev-action" name="action" placeholder="Action, e.g. start" aria-label="Action">
    <input class="filter" id="ev-text" name="text" type="search" placeholder="Actor: name, image, id, label" aria-label="Actor">
    <span class="spacer"></span><span class="muted small" id="events-count"></span></form>
    <div class="error" role="alert" id="events-error"></div>
    <div class="table-wrap"><table id="events"><thead><tr><th>Time</th><th>Type</th><th>Action</th><th>Actor</th><th class="hide-sm">Details</th></tr></thead><tbody></tbody></table></div></div>`,
  envCrumbs(envId, 'Events'));
  const ring = new RingBuffer(MAX_EVENTS), tbody = $('#events tbody');
  let controller = null, scheduled = false, drawn = 0;
  const criteria = () => ({action: $('#ev-action').value.trim(), text: $('#ev-text').value.trim()});
  const row = e => { const attributes = (e.Actor && e.Actor.Attributes) || {};
    const details = Object.entries(attributes).filter(([k]) => k !== 'name').map(([k, v]) => `${k}=${v}`).join(' ');
    return `<tr class="event" data-type="${esc(e.Type)}"><td class="small">${esc(fmtDate((e.timeNano || 0) / 1e9 || e.time))}</td><td>${esc(e.Type)}</td>
      <td><span class="badge">${esc(e.Action)}</span></td><td class="mono small">${esc(eventActor(e))}</td><td class="hide-sm muted small">${esc(details.slice(0, 300))}</td></tr>`; };
  const count = () => { $('#events-count').textContent = `${tbody.childElementCount} shown of ${ring.size} received`; };
  const redraw = () => { const c = criteria(); drawn = ring.seq;
    tbody.innerHTML = ring.since().filter(e => eventMatches(e, c)).slice(-MAX_SHOWN).reverse().map(row).join(''); count(); };
  const frame = () => { // the newest first: new rows go on top, the oldest fall off the bottom
    scheduled = false; const c = criteria(), fresh = ring.since(drawn).filter(e => eventMatches(e, c)); drawn = ring.seq;
    if (!fresh.length) return count();
    tbody.insertAdjacentHTML('afterbegin', fresh.slice(-MAX_SHOWN).reverse().map(row).join(''));
    while (tbody.childElementCount > MAX_SHOWN) tbody.lastElementChild.remove();
    count();
  };
  let lastNano = 0, retry = 0;
  const start = (resume = false) => {
    if (controller) controller.abort();
    clearTimeout(retry); controller = new AbortController(); $('#events-error').textContent = '';
    if (!resume) { ring.clear(); drawn = 0; tbody.innerHTML = ''; lastNano = 0; }
    const type = $('#ev-type').value, back = +$('#ev-since').value;
    const params = new URLSearchParams();
    if (type) params.set('filters', JSON.stringify({type: [type]}));
    if (resume && lastNano) params.set('since', String(Math.floor(lastNano / 1e9)));
    else if (back) params.set('since', String(Math.floor(Date.now() / 1000) - back));
    $('#events-state').textContent = 'live';
    const signal = controller.signal;
    apiStream('GET', `${dockerBase(envId)}/events?${params}`, undefined, jsonLines(e => {
      if (e.timeNano && e.timeNano <= lastNano) return; // already shown before a reconnection
      lastNano = e.timeNano || lastNano; ring.push(e);
      if (!scheduled) { scheduled = true; requestAnimationFrame(frame); } }), undefined, signal)
      .then(() => { $('#events-state').textContent = 'the stream ended'; })
      .catch(err => { if (err.name === 'AbortError' || signal.aborted) return;
        $('#events-state').textContent = ''; $('#events-error').textContent = err.message;
        if (!(err instanceof ApiFailure)) { $('#events-state').textContent = 'reconnecting…'; retry = setTimeout(() => start(true), 1000); } });
  };
  onLeave(() => { clearTimeout(retry); if (controller) controller.abort(); });
  $('#ev-type').addEventListener('change', () => start()); $('#ev-since').addEventListener('change', () => start());
  let typing = 0;
  $('#events-filter').addEventListener('input', e => { if (e.target.tagName === 'INPUT') { clearTimeout(typing); typing = setTimeout(redraw, 80); } });
  $('#events-filter').addEventListener('submit', e => e.preventDefault());
  start();
}
