// Page: one container, with its tabs: overview, logs, stats, console (the terminal) and inspect.
import {api, apiStream} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {download, onSubmit, showError, toast} from '../feedback.js';
import {containerName, esc, fmtBytes, fmtDate} from '../format.js';
import {every, onLeave} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';
import {dockerStreamDecoder, jsonLines} from '../streams.js';
import {Terminal} from '../terminal.js';
import {jsonTree, lineChart} from '../widgets.js';

const CONTAINER_TABS = [['overview', 'Overview'], ['logs', 'Logs'], ['stats', 'Stats'], ['console', 'Console'], ['inspect', 'Inspect']];
export async function pageContainer(envId, containerId, tab = 'overview') {
  const base = dockerBase(envId);
  const c = await api('GET', `${base}/containers/${containerId}/json`);
  const name = containerName(c);
  const main = render(name, `<div class="toolbar"><h2>${esc(name)}</h2><span class="badge ${esc(c.State.Status)}" id="c-state">${esc(c.State.Status)}</span>
    <span class="spacer"></span>${['start', 'stop', 'restart', 'kill', 'pause', 'unpause'].map(a => `<button data-action="${a}">${a[0].toUpperCase() + a.slice(1)}</button>`).join('')}
    <a class="button" href="#/env/${envId}/containers/new?from=${esc(c.Id)}">Duplicate/Edit</a><button class="danger" data-action="remove">Remove</button></div>
    <nav class="tabs">${CONTAINER_TABS.map(([t, l]) => `<a href="#/env/${envId}/containers/${esc(c.Id)}/${t}" class="${t === tab ? 'active' : ''}">${l}</a>`).join('')}</nav>
    <div id="tab"></div>`, envCrumbs(envId, `<a href="#/env/${envId}/containers">Containers</a>`, esc(name)));
  $$('[data-action]', main).forEach(b => b.addEventListener('click', async () => {
    const action = b.dataset.action;
    try {
      if (action === 'remove') { if (!confirm(`Remove container ${name}?`)) return; await api('DELETE', `${base}/containers/${c.Id}?force=1`); toast(`Container ${name} removed`); location.hash = `#/env/${envId}/containers`; return; }
      await api('POST', `${base}/containers/${c.Id}/${action}`); toast(`${name}: ${action} done`); await showState();
    } catch (err) { toast(`${action}: ${err.message}`, true); }
  }));
  const showState = async () => { const now = await api('GET', `${base}/containers/${c.Id}/json`);
    $('#c-state').textContent = now.State.Status; $('#c-state').className = `badge ${now.State.Status}`; };
  watchEngine(envId, ['container'], showState);
  const el = $('#tab');
  const tabs = {overview: containerOverview, logs: containerLogs, stats: containerStats, console: containerConsole,
                inspect: (el, c) => { el.innerHTML = `<div class="card tree"><ul>${jsonTree(c)}</ul></div>`; }};
  await (tabs[tab] || containerOverview)(el, c, envId);
}
function containerOverview(el, c, envId) {
  const net = Object.entries((c.NetworkSettings || {}).Networks || {});
  const ports = Object.entries((c.NetworkSettings || {}).Ports || {}).flatMap(([p, b]) => (b || []).map(x => `${x.HostIp}:${x.HostPort} → ${p}`));
  el.innerHTML = `<div class="grid2"><div class="card"><h3>Status</h3><dl class="kv"><dt>ID</dt><dd class="mono">${esc(c.Id)}</dd>
    <dt>Image</dt><dd>${esc(c.Config.Image)}</dd><dt>Created</dt><dd>${fmtDate(c.Created)}</dd><dt>Started</dt><dd>${fmtDate(c.State.StartedAt)}</dd>
    <dt>Command</dt><dd class="mono">${esc([...(c.Config.Entrypoint || []), ...(c.Config.Cmd || [])].join(' '))}</dd>
    <dt>Restart policy</dt><dd>${esc((c.HostConfig.RestartPolicy || {}).Name || 'no')}</dd><dt>Ports</dt><dd>${esc(ports.join(', ')) || '<span class="muted">none</span>'}</dd>
    <dt>Networks</dt><dd>${net.map(([n, v]) => `${esc(n)} ${esc(v.IPAddress)}`).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Volumes</dt><dd>${(c.Mounts || []).map(m => `${esc(m.Name || m.Source)} → ${esc(m.Destination)}`).join('<br>') || '<span class="muted">none</span>'}</dd></dl></div>
    <div class="card"><h3>Environment variables</h3><pre class="small mono">${esc((c.Config.Env || []).join('\n')) || '<span class="muted">none</span>'}</pre>
    <h3>Labels</h3><pre class="small mono">${esc(Object.entries(c.Config.Labels || {}).map(([k, v]) => `${k}=${v}`).join('\n')) || '<span class="muted">none</span>'}</pre></div></div>`;
}

const MAX_LOG_LINES = 10000;
async function containerLogs(el, c, envId) {
  el.innerHTML = `<div class="toolbar"><input class="filter" id="log-search" type="search" placeholder="Search logs" aria-label="Search logs">
    <label class="check"><input type="checkbox" id="log-follow" checked> Follow</label>
    <label class="check"><input type="checkbox" id="log-ts"> Timestamps</label>
    <label class="check"><input type="checkbox" id="log-only"> Only matching lines</label>
    <label for="log-tail" class="check">Lines <select id="log-tail"><option>100</option><option selected>1000</option><option value="all">all</option></select></label>
    <span class="spacer"></span><span class="muted small" id="log-count"></span><button id="log-download">Download</button></div>
    <div class="logs" id="logs" tabindex="0" aria-label="Container logs" aria-live="off"></div>`;
  const box = $('#logs'); let lines = [], partial = {1: '', 2: ''}, scheduled = false, controller = null;
  const draw = () => {
    scheduled = false;
    const q = $('#log-search').value, showTs = $('#log-ts').checked, only = $('#log-only').checked;
    const pattern = q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), test = q ? new RegExp(pattern, 'i') : null;
    const shown = test && only ? lines.filter(l => test.test(l.text)) : lines;
    const re = test;
    let matches = 0;
    box.innerHTML = shown.slice(-3000).map(l => {
      let text = esc(l.text);
      if (re) text = text.replace(new RegExp(esc(q).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi'), m => { matches++; return `<mark>${m}</mark>`; });
      return `<div class="${l.stream === 2 ? 'err' : ''}">${showTs && l.ts ? `<span class="ts">${esc(l.ts)} </span>` : ''}${text}</div>`;
    }).join('');
    $('#log-count').textContent = `${lines.length} lines` + (re ? ` · ${matches} matches` : '');
    if ($('#log-follow').checked) box.scrollTop = box.scrollHeight;
  };
  const schedule = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(draw); } };
  const onText = (stream, text) => {
    const parts = (partial[stream] + text).split('\n'); partial[stream] = parts.pop();
    for (const raw of parts) { const m = raw.match(/^(\d{4}-\d\d-\d\dT\S+) (.*)$/s); lines.push({stream, ts: m ? m[1] : '', text: (m ? m[2] : raw).replace(/\r$/, '')}); }
    if (lines.length > MAX_LOG_LINES) lines = lines.slice(-MAX_LOG_LINES);
    schedule();
  };
  const start = () => {
    if (controller) controller.abort();
    controller = new AbortController(); lines = []; partial = {1: '', 2: ''};
    const tail = $('#log-tail').value;
    const url = `${dockerBase(envId)}/containers/${c.Id}/logs?stdout=1&stderr=1&timestamps=1&follow=1&tail=${tail}`;
    const decode = dockerStreamDecoder(c.Config.Tty, onText);
    apiStream('GET', url, undefined, decode, undefined, controller.signal).catch(err => { if (err.name !== 'AbortError') { box.insertAdjacentHTML('beforeend', `<div class="err">${esc(err.message)}</div>`); } });
    schedule();
  };
  onLeave(() => controller && controller.abort());
  $('#log-search').addEventListener('input', schedule);
  ['#log-ts', '#log-only'].forEach(s => $(s).addEventListener('change', schedule));
  $('#log-follow').addEventListener('change', schedule);
  $('#log-tail').addEventListener('change', start);
  box.addEventListener('scroll', () => { const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 20; if (!atEnd && $('#log-follow').checked && !scheduled) $('#log-follow').checked = false; });
  $('#log-download').addEventListener('click', () => {
    const text = lines.map(l => ($('#log-ts').checked && l.ts ? l.ts + ' ' : '') + l.text).join('\n') + '\n';
    const url = URL.createObjectURL(new Blob([text], {type: 'text/plain'}));
    download(url, `${containerName(c)}.log`); setTimeout(() => URL.revokeObjectURL(url), 5000);
  });
  start();
}

async function containerStats(el, c, envId) {
  if (c.State.Status !== 'running') { el.innerHTML = '<p class="empty">Statistics are available while the container runs.</p>'; return; }
  el.innerHTML = '<div class="charts"><div id="ch-cpu"></div><div id="ch-mem"></div><div id="ch-net"></div><div id="ch-io"></div></div><div class="error" id="stats-error"></div><div id="top"></div>';
  const rate = n => `${fmtBytes(n)}/s`;
  const cpu = lineChart($('#ch-cpu'), 'CPU', [{label: 'CPU %', color: '#1e88e5'}], v => `${v.toFixed(1)} %`);
  const mem = lineChart($('#ch-mem'), 'Memory', [{label: 'used', color: '#8e24aa'}], fmtBytes);
  const net = lineChart($('#ch-net'), 'Network', [{label: 'received', color: '#43a047'}, {label: 'sent', color: '#fb8c00'}], rate);
  const io = lineChart($('#ch-io'), 'Disk I/O', [{label: 'read', color: '#00897b'}, {label: 'written', color: '#e53935'}], rate);
  let previous = null;
  const sum = (list, op) => (list || []).filter(e => e.op && e.op.toLowerCase() === op).reduce((a, e) => a + e.value, 0);
  const onStats = s => {
    const now = Date.parse(s.read) / 1000;
    const netRx = Object.values(s.networks || {}).reduce((a, n) => a + n.rx_bytes, 0), netTx = Object.values(s.networks || {}).reduce((a, n) => a + n.tx_bytes, 0);
    const blk = (s.blkio_stats || {}).io_service_bytes_recursive, rd = sum(blk, 'read'), wr = sum(blk, 'write');
    const cpuDelta = s.cpu_stats.cpu_usage.total_usage - s.precpu_stats.cpu_usage.total_usage;
    const sysDelta = (s.cpu_stats.system_cpu_usage || 0) - (s.precpu_stats.system_cpu_usage || 0);
    const cpus = s.cpu_stats.online_cpus || (s.cpu_stats.cpu_usage.percpu_usage || [1]).length;
    cpu.push([sysDelta > 0 ? cpuDelta / sysDelta * cpus * 100 : 0]);
    const cache = (s.memory_stats.stats || {}).inactive_file ?? (s.memory_stats.stats || {}).cache ?? 0;
    mem.push([Math.max(0, (s.memory_stats.usage || 0) - cache)]);
    if (previous) { const dt = Math.max(0.1, now - previous.now);
      net.push([(netRx - previous.netRx) / dt, (netTx - previous.netTx) / dt]); io.push([(rd - previous.rd) / dt, (wr - previous.wr) / dt]); }
    previous = {now, netRx, netTx, rd, wr};
  };
  apiStream('GET', `${dockerBase(envId)}/containers/${c.Id}/stats?stream=1`, undefined, jsonLines(onStats))
    .catch(err => { if (err.name !== 'AbortError') $('#stats-error').textContent = err.message; });
  const top = async () => { const t = await api('GET', `${dockerBase(envId)}/containers/${c.Id}/top`);
    $('#top').innerHTML = `<div class="card"><h3>Processes</h3><div class="table-wrap"><table><thead><tr>${t.Titles.map(x => `<th>${esc(x)}</th>`).join('')}</tr></thead>
      <tbody>${t.Processes.map(p => `<tr>${p.map(x => `<td class="mono small">${esc(x)}</td>`).join('')}</tr>`).join('')}</tbody></table></div></div>`; };
  top().catch(() => {}); every(5000, top);
}
async function containerConsole(el, c, envId) {
  if (c.State.Status !== 'running') { el.innerHTML = '<p class="empty">Start the container to open a console.</p>'; return; }
  el.innerHTML = `<form class="toolbar" id="console-form"><label for="console-cmd" class="check">Command</label>
    <select id="console-cmd" name="cmd" class="narrow"><option>sh</option><option>bash</option><option>/bin/sh -l</option><option>ash</option></select>
    <input id="console-custom" name="custom" class="filter" placeholder="or another command" aria-label="Custom command">
    <button class="primary" type="submit" id="console-connect">Connect</button><button type="button" id="console-attach">Attach</button>
    <button type="button" id="console-close" disabled>Disconnect</button><span class="muted small" id="console-status"></span>
    <div class="error" role="alert"></div></form><div class="term" id="term"></div>`;
  const term = new Terminal($('#term'), data => { if (socket && socket.readyState === 1) socket.send(new TextEncoder().encode(data)); });
  let socket = null;
  const status = t => { $('#console-status').textContent = t; };
  const sendSize = (cols, rows) => { if (socket && socket.readyState === 1) socket.send(JSON.stringify({type: 'resize', cols, rows})); };
  term.onResize = sendSize; term.fit(); term.draw();
  const observer = new ResizeObserver(() => term.fit()); observer.observe($('#term'));
  const close = () => { if (socket) { socket.onclose = null; socket.close(); socket = null; } $('#console-close').disabled = true; status('disconnected'); };
  onLeave(() => { close(); observer.disconnect(); });
  const open = mode => {
    close(); term.reset(); term.fit(); term.draw();
    const cmd = $('#console-custom').value.trim() || $('#console-cmd').value;
    const query = new URLSearchParams({containerId: c.Id, mode, cmd});
    // The session cookie authenticates the socket: no token in the URL.
    socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/endpoints/${envId}/console/ws?${query}`);
    socket.binaryType = 'arraybuffer';
    status('connecting…');
    socket.onopen = () => { status(mode === 'attach' ? 'attached' : `connected: ${cmd}`); $('#console-close').disabled = false; sendSize(term.cols, term.rows); $('#term').focus(); };
    socket.onmessage = m => term.write(typeof m.data === 'string' ? m.data : new Uint8Array(m.data));
    socket.onclose = e => { status(e.code === 1000 || e.code === 1005 ? 'session ended' : `closed (${e.code}${e.reason ? ': ' + e.reason : ''})`); $('#console-close').disabled = true;
      if (e.code === 1006 && !socket.everOpened) showError($('#console-form'), new Error('The console could not be opened: your role on this environment may not allow it, or the container stopped')); };
    socket.addEventListener('open', () => { socket.everOpened = true; });
  };
  onSubmit($('#console-form'), async () => open('exec'));
  $('#console-attach').addEventListener('click', () => open('attach'));
  $('#console-close').addEventListener('click', close);
  $('#term').addEventListener('focus', () => term.draw()); $('#term').addEventListener('blur', () => term.draw());
}
