// Page: one live log view for many containers (a stack's, or any selection from the containers list): one stream
// from GET /api/endpoints/{id}/logs, each line tagged with its container's colour, stderr marked, filter with
// highlight, pause and resume. A virtualised view: the lines live in a bounded buffer (live.js's LogLines) and only
// the rows in the viewport, and a few each side, are in the page, drawn at most once per animation frame; the
// scroll height comes from a spacer of rows x row height. A dropped connection resumes where it stopped.
import {api, ApiFailure, apiStream} from '../api.js';
import {dockerBase} from '../docker.js';
import {$, $$} from '../dom.js';
import {download} from '../feedback.js';
import {containerName, esc} from '../format.js';
import {compileFilter, containerHue, FRAME_DATA, FRAME_END, FRAME_OPEN, logLinesAsText, logLineSplitter, LogLines,
  mergedFrameDecoder, rowChanges, timestampKey, visibleWindow} from '../live.js';
import {onLeave} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';

const BUFFERED_LINES = 20000;
const MARGIN_ROWS = 8;        // rows drawn beyond each edge of the viewport, so a small scroll shows drawn rows
const SCAN_BUDGET = 5000;     // kept lines a new filter tests per frame
const COUNT_EVERY_MS = 250;   // the "lines received" counter is rewritten at most this often
// Following the tail, the rows are redrawn at most this often (30 a second): more lines than a screenful arrive
// per frame in a busy stream, and nobody reads them faster; the page's frames and input stay at the display's rate.
const FOLLOW_REDRAW_MS = 33;
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
    <div class="logs merged-logs" id="merged-logs" tabindex="0" aria-label="Merged container logs" aria-live="off"><div class="log-spacer"></div><div class="log-rows"></div></div>`,
  envCrumbs(envId, `<a href="#/env/${envId}/containers">Containers</a>`, 'Logs'));
  const box = $('#merged-logs'), spacer = $('.log-spacer', box), rows = $('.log-rows', box);
  // `live` receives every line; `shown` is what the view draws: `live` itself, or a copy of it while paused.
  let live = new LogLines(BUFFERED_LINES), shown = live, pausedAt = 0, droppedNote = '';
  let names = [], hues = [], controller = null, scheduled = false, countTimer = 0, lastCount = 0, lastDraw = 0;
  // The view's geometry, read once (row height) or from events (viewport, scroll), never in the drawing loop.
  rows.innerHTML = '<div class="line"><span class="text">x</span></div>';
  const rowHeight = Math.round(rows.firstElementChild.getBoundingClientRect().height) || 17;
  rows.textContent = '';
  let viewportHeight = box.clientHeight, scrollTop = 0, spacerRows = -1, anchor = null;
  let drawn = [], drawnFirst = -1, drawnGeneration = -1, generation = 0; // rows in the page (sequence numbers); what they were drawn with
  const following = () => $('#log-follow').checked;

  const rowHtml = seq => { // the HTML of one row, made once per line for each filter and timestamps choice
    const l = shown.ring.at(seq);
    if (l.generation !== generation) {
      l.generation = generation;
      l.html = `<div class="line hue${l.hue}${l.stream === 2 ? ' err' : ''}" data-c="${l.container}" data-seq="${seq}">` +
        `${$('#log-ts').checked && l.ts ? `<span class="ts">${esc(l.ts)} </span>` : ''}<span class="who">${esc(names[l.container])}</span>` +
        `${l.stream === 2 ? '<span class="stream" title="standard error">stderr</span>' : ''}<span class="text">${shown.filter.highlight(l.text)}</span></div>`;
    }
    return l.html;
  };
  const writeCount = () => {
    clearTimeout(countTimer); countTimer = 0; lastCount = performance.now();
    const matching = shown.filter.active ? ` · ${shown.matches.length}${shown.scanning ? '…' : ''} matching` : '';
    $('#log-count').textContent = `${live.ring.seq} lines received, ${live.ring.size} kept` + matching +
      (shown !== live ? ` · paused, ${live.ring.seq - pausedAt} new` : '') + droppedNote;
  };
  const countSoon = () => { if (!countTimer) countTimer = setTimeout(writeCount, Math.max(0, COUNT_EVERY_MS - (performance.now() - lastCount))); };
  const draw = () => {
    const length = shown.length, maxTop = Math.max(0, length * rowHeight - viewportHeight);
    if (length !== spacerRows) { spacer.style.height = `${length * rowHeight}px`; spacerRows = length; }
    let top = scrollTop;
    if (following()) top = maxTop;
    else if (anchor) top = shown.indexOf(anchor.seq) * rowHeight + anchor.offset;
    top = Math.min(Math.max(0, top), maxTop);
    if (top !== scrollTop) { scrollTop = top; box.scrollTop = top; }
    const {first, last} = visibleWindow(length, rowHeight, top, viewportHeight, MARGIN_ROWS), wanted = new Array(last - first);
    for (let i = first; i < last; i++) wanted[i - first] = shown.seqAt(i);
    const changes = drawnGeneration === generation ? rowChanges(drawn, wanted) : null;
    if (!changes) rows.innerHTML = wanted.map(rowHtml).join('');
    else {
      for (let n = 0; n < changes.dropFront; n++) rows.firstElementChild.remove();
      for (let n = 0; n < changes.dropBack; n++) rows.lastElementChild.remove();
      if (changes.addFront.length) rows.insertAdjacentHTML('afterbegin', changes.addFront.map(rowHtml).join(''));
      if (changes.addBack.length) rows.insertAdjacentHTML('beforeend', changes.addBack.map(rowHtml).join(''));
    }
    if (first !== drawnFirst) { rows.style.transform = `translateY(${first * rowHeight}px)`; drawnFirst = first; }
    drawn = wanted; drawnGeneration = generation;
  };
  const frame = now => {
    scheduled = false;
    if (following() && shown === live && !live.scanning && now - lastDraw < FOLLOW_REDRAW_MS - 4) { schedule(); return; }
    lastDraw = now;
    let scanned = false, more = false;
    for (const lines of new Set([shown, live])) if (lines.scanning) { scanned = true; more = lines.scan(SCAN_BUDGET) || more; }
    draw();
    if (scanned && !more) writeCount(); else countSoon(); // the number of matches as soon as it is known
    if (more) schedule();
  };
  const schedule = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(frame); } };
  const refilter = () => { // a new filter, "only matching" or timestamps choice: the rows are drawn anew
    const filter = compileFilter($('#log-filter').value, $('#log-regex').checked); $('#log-error').textContent = filter.error;
    for (const lines of new Set([shown, live])) lines.setFilter(filter, $('#log-only').checked);
    generation++; writeCount(); schedule();
  };
  // Where the user scrolled to: the line at the top of the viewport stays there while lines arrive or drop.
  const anchorAt = top => { const index = Math.floor(top / rowHeight), seq = shown.seqAt(Math.min(index, Math.max(0, shown.length - 1)));
    anchor = shown.length ? {seq, offset: top - Math.min(index, shown.length - 1) * rowHeight} : null; };
  const stopFollowing = () => { if (following()) { $('#log-follow').checked = false; anchorAt(scrollTop); } };
  box.addEventListener('scroll', () => {
    const top = box.scrollTop;
    if (Math.abs(top - scrollTop) < 1) return; // the view's own scroll
    if (following() && top < scrollTop - rowHeight / 2) $('#log-follow').checked = false;
    scrollTop = top; if (!following()) anchorAt(top);
    schedule();
  }, {passive: true});
  box.addEventListener('wheel', e => { if (e.deltaY < 0) stopFollowing(); }, {passive: true});
  box.addEventListener('keydown', e => { if (['ArrowUp', 'PageUp', 'Home'].includes(e.key)) stopFollowing(); });
  const resized = new ResizeObserver(() => { viewportHeight = box.clientHeight; schedule(); });
  resized.observe(box);

  const legend = ended => { $('#log-legend').innerHTML = names.map((n, i) => `<span class="chip hue${containerHue(n)}">${esc(n)}${ended.has(i) ? ' <span class="muted">(ended)</span>' : ''}</span>`).join(''); };
  let lastKeys = [], lastTimes = [], retry = 0;
  const start = async (resume = false) => {
    if (controller) controller.abort();
    clearTimeout(retry); controller = new AbortController(); $('#log-error').textContent = '';
    const range = new FormData($('#log-range')), params = new URLSearchParams({containers: chosen.map(c => c.Id).join(','), tail: range.get('tail'), follow: '1'});
    for (const name of ['since', 'until']) if (range.get(name)) params.set(name, String(Date.parse(range.get(name)) / 1000));
    if (!resume) {
      const filter = live.filter, onlyMatching = live.onlyMatching;
      live = new LogLines(BUFFERED_LINES); live.setFilter(filter, onlyMatching);
      shown = live; droppedNote = ''; lastKeys = []; lastTimes = []; anchor = null; generation++;
      $('#log-pause').textContent = 'Pause'; $('#log-pause').setAttribute('aria-pressed', 'false'); schedule();
    } else { // from the oldest of the containers' last lines on; the lines already kept are skipped below
      const times = lastTimes.flatMap(streams => Object.values(streams || {})).filter(t => t > 0);
      params.set('tail', 'all'); if (times.length) params.set('since', String(Math.floor(Math.min(...times) / 1000)));
    }
    names = chosen.map(containerName); hues = names.map(containerHue); const splitters = [], ended = new Set(); legend(ended);
    // A resumed stream replays each container's lines from the oldest last one on: a line is kept once it is later
    // than the last kept of its own stream. Only within one stream are times in order: the engine may write a
    // container's stderr line before the stdout line stamped just before it.
    const keep = (index, l) => { const key = timestampKey(l.ts), last = lastKeys[index] || (lastKeys[index] = {});
      if (key && last[l.stream] && key <= last[l.stream]) return;
      last[l.stream] = key || last[l.stream];
      if (l.time) (lastTimes[index] || (lastTimes[index] = {}))[l.stream] = l.time;
      l.container = index; l.hue = hues[index]; live.push(l); };
    const onFrame = (kind, index, payload) => {
      if (kind === FRAME_OPEN) { const c = JSON.parse(new TextDecoder().decode(payload)); names[index] = c.Name; hues[index] = containerHue(c.Name);
        splitters[index] = logLineSplitter(c.Tty, l => keep(index, l)); legend(ended); }
      else if (kind === FRAME_DATA) { splitters[index](payload); if (shown === live) schedule(); else countSoon(); }
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
  onLeave(() => { clearTimeout(retry); clearTimeout(countTimer); resized.disconnect(); if (controller) controller.abort(); });
  let typing = 0;
  $('#log-filter').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(refilter, 80); });
  ['#log-regex', '#log-only', '#log-ts'].forEach(s => $(s).addEventListener('change', refilter));
  $('#log-follow').addEventListener('change', () => { if (!following()) anchorAt(scrollTop); schedule(); });
  // Pause: the view keeps a copy of the lines it had; new ones gather in `live`, shown again on resume.
  $('#log-pause').addEventListener('click', e => {
    const pausing = shown === live;
    if (pausing) { shown = live.copy(); pausedAt = live.ring.seq; }
    else { // more lines came than the buffer holds: the oldest of them were never shown
      shown = live; if (live.ring.firstSeq > pausedAt) droppedNote = ` · ${live.ring.firstSeq - pausedAt} lines dropped while paused (the buffer holds ${BUFFERED_LINES})`;
    }
    e.target.textContent = pausing ? 'Resume' : 'Pause'; e.target.setAttribute('aria-pressed', String(pausing));
    writeCount(); schedule();
  });
  $('#log-download').addEventListener('click', () => {
    const text = logLinesAsText(shown.shown(), names, $('#log-ts').checked);
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
