// Page: one live log view for many containers (a stack's, or any selection from the containers list): one stream
// from GET /api/endpoints/{id}/logs, each line tagged with its container's colour, stderr marked, filter with
// highlight, pause and resume. Memory stays bounded: a ring buffer of lines, at most MAX_SHOWN lines in the page,
// new lines appended once per animation frame. A dropped connection resumes where it stopped.
import {api, ApiFailure, apiStream} from '../api.js';
import {dockerBase} from '../docker.js';
import {$, $$} from '../dom.js';
import {download} from '../feedback.js';
import {containerName, esc} from '../format.js';
import {compileFilter, containerHue, FRAME_DATA, FRAME_END, FRAME_OPEN, logLinesAsText, logLineSplitter,
  mergedFrameDecoder, RingBuffer, timestampKey} from '../live.js';
import {onLeave} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';

const BUFFERED_LINES = 20000;
const MAX_SHOWN = 2000;
// While following a fast stream, lines that would scroll out of view within the same frame are not drawn; the
// page is redrawn whole from the buffer once the user stops following or pauses, so scrolling back misses none.
const FRAME_LINES = 150;
const STACK_LABELS = ['com.docker.compose.project', 'com.docker.stack.namespace'];
const stackOf = c => STACK_LABELS.map(k => (c.Labels || {})[k]).find(Boolean) || '';

export async function pageLogs(envId) {
  const query = new URLSearchParams(location.hash.split('?')[1] || '');
  const all = await api('GET', `${dockerBase(envId)}/containers/json?all=1`);
  const stack = query.get('stack') || '', asked = (query.get('containers') || '').split(',').filter(Boolean);
  const chosen = stack ? all.filter(c => stackOf(c) === stack) : all.filter(c => asked.some(id => c.Id.startsWith(id) || containerName(c) === id));
  if (!chosen.length) return pickContainers(envId, all, stack || asked.length);
  chosen.sort((a, b) => containerName(a).localeCompare(containerName(b)));
  const title = stack ? `Logs of stack ${stack}` : `Logs of ${chosen.length} container${chosen.length > 1 ? 's' : ''}`;
  render(title, `<div class="toolbar"><h2 class="flat">${esc(title)}</h2><span class="spacer"></span><a href="#/env/${envId}/logs">Choose other containers</a></div>
    <div class="card"><div class="toolbar"><input class="filter" id="log-filter" type="search" placeholder="Filter: text, or a regular expression" aria-label="Filter the lines">
    <label class="check"><input type="checkbox" id="log-regex"> Regular expression</label>
    <label class="check"><input type="checkbox" id="log-only" checked> Only matching lines</label>
    <label class="check"><input type="checkbox" id="log-ts"> Timestamps</label>
    <label class="check"><input type="checkbox" id="log-follow" checked> Follow</label>
    <button id="log-pause" aria-pressed="false">Pause</button><button id="log-download">Download</button></div>
    <form class="toolbar" id="log-range"><label class="check" for="log-since">Since <input type="datetime-local" step="1" id="log-since" name="since"></label>
    <label class="check" for="log-until">Until <input type="datetime-local" step="1" id="log-until" name="until"></label>
    <label class="check" for="log-tail">Last <select id="log-tail" name="tail"><option>100</option><option selected>500</option><option>5000</option><option value="all">all</option></select> lines</label>
    <button type="submit">Apply</button><span class="spacer"></span><span class="muted small" id="log-count" aria-live="off"></span></form>
    <div class="error" role="alert" id="log-error"></div>
    <div id="log-legend" class="small"></div></div>
    <div class="logs merged-logs" id="merged-logs" tabindex="0" aria-label="Merged container logs" aria-live="off"></div>`,
  envCrumbs(envId, `<a href="#/env/${envId}/containers">Containers</a>`, 'Logs'));
  const box = $('#merged-logs'), ring = new RingBuffer(BUFFERED_LINES);
  let names = [], drawn = 0, paused = false, scheduled = false, controller = null, filter = compileFilter('', false), droppedNote = '', skipped = false;
  const lineHtml = l => `<div class="line hue${containerHue(names[l.container])}${l.stream === 2 ? ' err' : ''}" data-c="${l.container}">` +
    `${$('#log-ts').checked && l.ts ? `<span class="ts">${esc(l.ts)} </span>` : ''}<span class="who">${esc(names[l.container])}</span>` +
    `${l.stream === 2 ? '<span class="stream" title="standard error">stderr</span>' : ''}<span class="text">${filter.highlight(l.text)}</span></div>`;
  const shows = l => !$('#log-only').checked || filter.test(l.text);
  const count = () => { const waiting = ring.seq - drawn;
    $('#log-count').textContent = `${ring.seq} lines received, ${ring.size} kept` + (paused ? ` · paused, ${waiting} new` : '') + droppedNote; };
  const follow = () => { if ($('#log-follow').checked) box.scrollTop = box.scrollHeight; };
  const redraw = () => { // a new filter or timestamps choice: the last MAX_SHOWN matching lines of the buffer
    filter = compileFilter($('#log-filter').value, $('#log-regex').checked); $('#log-error').textContent = filter.error;
    const end = paused ? drawn : ring.seq; // paused: nothing that arrived since, whatever is redrawn
    const lines = ring.since(0, end).filter(shows); drawn = end; skipped = false;
    box.innerHTML = lines.slice(-MAX_SHOWN).map(lineHtml).join(''); count(); follow();
  };
  const frame = () => {
    scheduled = false; if (paused) { count(); return; }
    if (drawn < ring.firstSeq) droppedNote = ` · ${ring.firstSeq - drawn} lines dropped while paused (the buffer holds ${BUFFERED_LINES})`;
    let fresh = ring.since(drawn).filter(shows).slice(-MAX_SHOWN); drawn = ring.seq;
    if (fresh.length > FRAME_LINES && $('#log-follow').checked) { fresh = fresh.slice(-FRAME_LINES); skipped = true; }
    if (fresh.length) {
      box.insertAdjacentHTML('beforeend', fresh.map(lineHtml).join(''));
      const extra = box.childElementCount - MAX_SHOWN;
      if (extra > 0) { const range = document.createRange(); range.setStartBefore(box.firstElementChild); range.setEndAfter(box.children[extra - 1]); range.deleteContents(); }
      follow();
    }
    count();
  };
  const schedule = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(frame); } };
  const legend = ended => { $('#log-legend').innerHTML = names.map((n, i) => `<span class="chip hue${containerHue(n)}">${esc(n)}${ended.has(i) ? ' <span class="muted">(ended)</span>' : ''}</span>`).join(''); };
  let lastKeys = [], lastTimes = [], retry = 0;
  const start = async (resume = false) => {
    if (controller) controller.abort();
    clearTimeout(retry); controller = new AbortController(); $('#log-error').textContent = '';
    const range = new FormData($('#log-range')), params = new URLSearchParams({containers: chosen.map(c => c.Id).join(','), tail: range.get('tail'), follow: '1'});
    for (const name of ['since', 'until']) if (range.get(name)) params.set(name, String(Date.parse(range.get(name)) / 1000));
    if (!resume) { ring.clear(); drawn = 0; droppedNote = ''; box.innerHTML = ''; lastKeys = []; lastTimes = []; }
    else { // from the oldest of the containers' last lines on; the lines already kept are skipped below
      const times = lastTimes.filter(t => t > 0);
      params.set('tail', 'all'); if (times.length) params.set('since', String(Math.floor(Math.min(...times) / 1000)));
    }
    names = chosen.map(containerName); const splitters = [], ended = new Set(); legend(ended);
    const keep = (index, l) => { const key = timestampKey(l.ts);
      if (key && lastKeys[index] && key <= lastKeys[index]) return; lastKeys[index] = key || lastKeys[index]; lastTimes[index] = l.time || lastTimes[index]; l.container = index; ring.push(l); };
    const onFrame = (kind, index, payload) => {
      if (kind === FRAME_OPEN) { const c = JSON.parse(new TextDecoder().decode(payload)); names[index] = c.Name;
        splitters[index] = logLineSplitter(c.Tty, l => keep(index, l)); legend(ended); }
      else if (kind === FRAME_DATA) { splitters[index](payload); schedule(); }
      else if (kind === FRAME_END) { ended.add(index); legend(ended); }
    };
    const signal = controller.signal;
    try { await apiStream('GET', `/api/endpoints/${envId}/logs?${params}`, undefined, mergedFrameDecoder(onFrame), undefined, signal); }
    catch (err) {
      if (err.name === 'AbortError' || signal.aborted) return;
      $('#log-error').textContent = err.message + (err.details ? ` (${err.details})` : '');
      // A refusal stays on the page; a lost connection (a network change, a server restart) is tried again.
      if (!(err instanceof ApiFailure)) { $('#log-error').textContent += ': reconnecting…'; retry = setTimeout(() => start(true), 1000); }
    }
  };
  onLeave(() => { clearTimeout(retry); if (controller) controller.abort(); });
  let typing = 0;
  $('#log-filter').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(redraw, 80); });
  ['#log-regex', '#log-only', '#log-ts'].forEach(s => $(s).addEventListener('change', redraw));
  const fillIn = () => { if (skipped) { const from = box.scrollTop; redraw(); box.scrollTop = from; } };
  $('#log-follow').addEventListener('change', () => { if ($('#log-follow').checked) follow(); else fillIn(); });
  box.addEventListener('wheel', () => { if ($('#log-follow').checked && box.scrollHeight - box.scrollTop - box.clientHeight > 40) { $('#log-follow').checked = false; fillIn(); } }, {passive: true});
  $('#log-pause').addEventListener('click', e => { paused = !paused; e.target.textContent = paused ? 'Resume' : 'Pause';
    e.target.setAttribute('aria-pressed', String(paused)); if (paused) fillIn(); else schedule(); count(); });
  $('#log-download').addEventListener('click', () => {
    const text = logLinesAsText(ring.since().filter(shows), names, $('#log-ts').checked);
    const url = URL.createObjectURL(new Blob([text], {type: 'text/plain'}));
    download(url, `${stack || 'containers'}-logs.txt`); setTimeout(() => URL.revokeObjectURL(url), 5000);
  });
  $('#log-range').addEventListener('submit', e => { e.preventDefault(); start(); });
  start();
}

// No containers named: choose some, or a stack, to see their logs together.
function pickContainers(envId, all, missing) {
  const stacks = [...new Set(all.map(stackOf).filter(Boolean))].sort();
  render('Logs', `<div class="toolbar"><h2>Logs of many containers</h2></div>
    ${missing ? '<p class="error" role="alert">None of the containers asked for is on this environment (any more).</p>' : ''}
    <div class="grid2"><div class="card"><h3>A stack</h3>${stacks.map(s => `<p><a href="#/env/${envId}/logs?stack=${encodeURIComponent(s)}">${esc(s)}</a></p>`).join('') || '<p class="muted">No stack here.</p>'}</div>
    <form class="card" id="log-pick"><h3>Containers</h3><div class="picker">${all.map(c => `<label class="check"><input type="checkbox" name="c" value="${esc(c.Id)}"> ${esc(containerName(c))} <span class="muted small">${esc(c.State)}</span></label>`).join('<br>') || '<p class="muted">No container here.</p>'}</div>
    <div class="error" role="alert"></div><button class="primary" type="submit">Show their logs</button></form></div>`, envCrumbs(envId, 'Logs'));
  $('#log-pick').addEventListener('submit', e => { e.preventDefault();
    const ids = $$('input[name=c]:checked').map(i => i.value.slice(0, 12));
    if (!ids.length) { $('#log-pick .error').textContent = 'Choose at least one container'; return; }
    location.hash = `#/env/${envId}/logs?containers=${ids.join(',')}`; });
}
