// Form and display components the pages share: rows of inputs, pull progress, JSON tree, charts, editor.
import {constants} from './constants.js';
import {$, $$} from './dom.js';
import {esc, fmtBytes} from './format.js';

// Rows of inputs the user adds and removes (ports, env, labels, volumes). fields: [{name, placeholder, options}].
export function pairsEditor(el, fields, values = [], addLabel = 'Add') {
  el.classList.add('pairs');
  const row = (vals = []) => { const div = document.createElement('div'); div.className = 'pair';
    div.innerHTML = fields.map((f, i) => f.options
      ? `<select data-part="${i}" aria-label="${esc(f.placeholder)}">${f.options.map(o => `<option ${o === vals[i] ? 'selected' : ''}>${esc(o)}</option>`).join('')}</select>`
      : `<input data-part="${i}" name="${esc(f.name || '')}" placeholder="${esc(f.placeholder)}" aria-label="${esc(f.placeholder)}" value="${esc(vals[i] ?? '')}"${f.hint ? ` data-error-hint="${esc(f.hint)}"` : ''}>`).join('') +
      `<button type="button" class="small remove-pair" aria-label="Remove this row">&times;</button>`;
    el.insertBefore(div, el.lastElementChild); };
  el.innerHTML = `<button type="button" class="small add-pair">+ ${esc(addLabel)}</button>`;
  el.addEventListener('click', e => { if (e.target.classList.contains('add-pair')) row(); else if (e.target.classList.contains('remove-pair')) e.target.closest('.pair').remove(); });
  values.forEach(row);
  const read = () => $$('.pair', el).map(p => fields.map((f, i) => $(`[data-part="${i}"]`, p).value.trim())).filter(v => v.some(Boolean));
  read.clear = () => $$('.pair', el).forEach(p => p.remove());
  return read;
}

// Per-layer progress of a pull, load or push stream; `stream` lines (build output) go to a log under the bars.
export function progressView(el) {
  el.innerHTML = '<div class="layers"></div><pre class="small mono build-log"></pre><div class="error" role="alert"></div>';
  const layers = $('.layers', el), log = $('.build-log', el), error = $('.error', el); const rows = new Map();
  return {
    feed(m) {
      if (m.error || m.errorDetail) { error.textContent = m.error || m.errorDetail.message; return; }
      if (m.stream) { log.textContent += m.stream; return; }
      if (m.aux && m.aux.ID) { log.textContent += `Built ${m.aux.ID}\n`; return; }
      if (!m.id || !m.status || /^Pulling from/.test(m.status)) { if (m.status) log.textContent += (m.id ? m.id + ': ' : '') + m.status + '\n'; return; }
      let r = rows.get(m.id);
      if (!r) { r = document.createElement('div'); r.className = 'layer'; r.dataset.layer = m.id;
        r.innerHTML = `<span class="mono">${esc(m.id.slice(0, 12))}</span><progress max="1" value="0"></progress><span class="detail muted"></span>`;
        layers.append(r); rows.set(m.id, r); }
      const bar = $('progress', r), detail = $('.detail', r), p = m.progressDetail || {};
      if (p.total) { bar.max = p.total; bar.value = p.current || 0; }
      if (/complete|already exists|Loaded|Pushed|Layer already/i.test(m.status)) { bar.max = 1; bar.value = 1; }
      detail.textContent = m.status + (p.total ? ` ${fmtBytes(p.current || 0)} / ${fmtBytes(p.total)}` : '');
    },
    failed: () => error.textContent,
    fail(message) { error.textContent = message; },
  };
}
export function jsonTree(value, key) {
  const label = key === undefined ? '' : `<span class="k">${esc(key)}</span>: `;
  if (value && typeof value === 'object') {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    if (!entries.length) return `<li>${label}<span class="muted">${Array.isArray(value) ? '[]' : '{}'}</span></li>`;
    return `<li><details ${key === undefined ? 'open' : ''}><summary>${label}<span class="muted">${Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`}</span></summary>
      <ul>${entries.map(([k, v]) => jsonTree(v, k)).join('')}</ul></details></li>`;
  }
  const cls = typeof value === 'string' ? 's' : 'n';
  return `<li>${label}<span class="${cls}">${esc(typeof value === 'string' ? `"${value}"` : String(value))}</span></li>`;
}
// Live line chart on a <canvas>: series [{label, color}], push(values) adds one point per series.
export function lineChart(el, title, series, format) {
  el.className = 'card chart';
  el.innerHTML = `<h3>${esc(title)}</h3><canvas role="img" aria-label="${esc(title)} chart"></canvas><div class="legend"></div>`;
  const canvas = $('canvas', el), legend = $('.legend', el), points = series.map(() => []), size = 60;
  const draw = () => {
    const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w) return;
    canvas.width = w * ratio; canvas.height = h * ratio;
    const g = canvas.getContext('2d'); g.scale(ratio, ratio);
    const styles = getComputedStyle(document.documentElement);
    const max = Math.max(1e-9, ...points.flat()) * 1.15;
    g.strokeStyle = styles.getPropertyValue('--border'); g.fillStyle = styles.getPropertyValue('--muted'); g.font = '11px system-ui';
    for (let i = 0; i <= 4; i++) { const y = 4 + (h - 8) * i / 4; g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
      g.fillText(format(max * (4 - i) / 4), 4, Math.max(12, y - 2)); }
    series.forEach((s, si) => { g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      points[si].forEach((v, i) => { const x = w - (points[si].length - 1 - i) * (w / (size - 1)), y = h - 4 - (h - 8) * v / max; i ? g.lineTo(x, y) : g.moveTo(x, y); });
      g.stroke(); });
    legend.innerHTML = series.map((s, si) => `<span class="badge">${esc(s.label)}: ${esc(format(points[si][points[si].length - 1] || 0))}</span>`).join('');
  };
  return {push(values) { values.forEach((v, i) => { points[i].push(v); if (points[i].length > size) points[i].shift(); }); draw(); }};
}
export function roleOptions(selected, roles) {
  return Object.entries(roles).map(([v, n]) => `<option value="${v}" ${+v === +selected ? 'selected' : ''}>${esc(n)}</option>`).join('');
}
export function bindEditor(errorLine) {
  const text = document.getElementById('content'), gutter = document.getElementById('gutter');
  const draw = () => { const n = text.value.split('\n').length;
    gutter.innerHTML = Array.from({length: n}, (_, i) => `<div class="${i + 1 === errorLine() ? 'bad' : ''}">${i + 1}</div>`).join(''); gutter.scrollTop = text.scrollTop; };
  text.oninput = draw; text.onscroll = () => { gutter.scrollTop = text.scrollTop; }; draw(); return draw;
}
export function statusBadge(ep) { return ep ? `<span class="badge ${ep.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}">${ep.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}</span>` : ''; }
export function checkboxes(items, name) {
  return items.map(i => `<label class="check"><input type="checkbox" name="${name}" value="${i.Id}"> ${esc(i.Name)}</label>`).join('') || '<p class="muted">None yet.</p>';
}
export const checkedIds = (form, name) => $$(`input[name=${name}]:checked`, form).map(x => +x.value);
