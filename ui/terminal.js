// Terminal: a compact VT100/xterm subset (enough for sh, top and vi in busybox).
import {esc} from './format.js';

const MAX_SCROLLBACK = 2000;
// The screen model: parses what the program writes (text, escape sequences) into lines of [character, CSS
// classes] and answers its queries (cursor position) through send. No DOM: unit-tested in ui/tests/.
export class Screen {
  constructor(send) {
    this.output = send; this.cols = 80; this.rows = 24; this.onResize = () => {};
    this.heldInput = ''; this.holdUntil = 0;
    this.reset();
  }
  send(data) {
    // busybox ash reads a cursor report and the keys typed right after it in one go, and drops the keys:
    // keys typed within a moment of a report wait for that moment to pass.
    const wait = this.holdUntil - performance.now();
    if (wait <= 0 && !this.heldInput) { this.output(data); return; }
    this.heldInput += data;
    if (this.heldInput === data) setTimeout(() => { const held = this.heldInput; this.heldInput = ''; this.output(held); }, Math.max(wait, 0));
  }
  report(data) { this.output(data); this.holdUntil = performance.now() + 80; }
  blankLine() { return Array.from({length: this.cols}, () => [' ', this.attrClass()]); }
  reset() {
    this.attr = {fg: -1, bg: -1, b: false, u: false, inv: false, dim: false};
    this.main = Array.from({length: this.rows}, () => this.blankLine()); this.alt = null; this.lines = this.main;
    this.x = 0; this.y = 0; this.top = 0; this.bottom = this.rows - 1; this.saved = {x: 0, y: 0};
    this.state = 0; this.params = ''; this.wrapPending = false; this.appCursor = false; this.cursorVisible = true;
    this.decoder = new TextDecoder(); this.dirty = true; this.scrollback = []; this.viewOffset = 0;
  }
  // Lines that scrolled off the top of the main screen can be read again with the wheel or Shift+PageUp.
  scrollView(lines) { this.viewOffset = Math.max(0, Math.min(this.scrollback.length, this.viewOffset + lines)); this.schedule(); }
  attrClass() {
    const a = this.attr || {fg: -1, bg: -1}; const fg = a.fg, bg = a.bg; const out = [];
    if (a.inv) { out.push(fg < 0 ? 'bgi' : `bg${fg}`, bg < 0 ? 'fgi' : `fg${bg}`); }
    else { if (fg >= 0) out.push(`fg${a.b && fg < 8 ? fg + 8 : fg}`); if (bg >= 0) out.push(`bg${bg}`); }
    if (a.b) out.push('b'); if (a.u) out.push('u'); if (a.dim) out.push('dim');
    return out.join(' ');
  }
  resize(cols, rows) {
    cols = Math.max(20, Math.min(400, cols)); rows = Math.max(5, Math.min(200, rows));
    if (cols === this.cols && rows === this.rows) return;
    const fit = lines => { const out = lines.slice(Math.max(0, lines.length - rows)).map(l => l.slice(0, cols).concat(Array.from({length: Math.max(0, cols - l.length)}, () => [' ', '']))); while (out.length < rows) out.push(Array.from({length: cols}, () => [' ', ''])); return out; };
    const shift = Math.max(0, this.main.length - rows);
    this.cols = cols; this.rows = rows; this.main = fit(this.main); if (this.alt) this.alt = fit(this.alt);
    this.lines = this.alt || this.main; this.y = Math.min(rows - 1, Math.max(0, this.y - shift)); this.x = Math.min(cols - 1, this.x);
    this.top = 0; this.bottom = rows - 1; this.dirty = true; this.schedule(); this.onResize(cols, rows);
  }
  write(data) {
    const text = typeof data === 'string' ? data : this.decoder.decode(data, {stream: true});
    for (const ch of text) this.feed(ch);
    this.schedule();
  }
  // Drawing is for the view (Terminal): a bare screen draws nothing.
  schedule() {}
  scrollUp(n = 1) {
    for (let i = 0; i < n; i++) {
      const [gone] = this.lines.splice(this.top, 1); this.lines.splice(this.bottom, 0, this.blankLine());
      if (!this.alt && this.top === 0) { this.scrollback.push(gone); if (this.scrollback.length > MAX_SCROLLBACK) this.scrollback.shift(); }
    }
  }
  scrollDown(n = 1) { for (let i = 0; i < n; i++) { this.lines.splice(this.bottom, 1); this.lines.splice(this.top, 0, this.blankLine()); } }
  lineFeed() { if (this.y === this.bottom) this.scrollUp(); else if (this.y < this.rows - 1) this.y++; }
  put(ch) {
    if (this.wrapPending) { this.x = 0; this.lineFeed(); this.wrapPending = false; }
    this.lines[this.y][this.x] = [ch, this.attrClass()];
    if (this.x === this.cols - 1) this.wrapPending = true; else this.x++;
  }
  feed(ch) {
    const code = ch.codePointAt(0);
    if (this.state === 0) {
      if (code >= 32 && code !== 127) return this.put(ch);
      this.wrapPending = code === 27 ? this.wrapPending : false;
      switch (ch) {
        case '\x1b': this.state = 1; return;
        case '\r': this.x = 0; return;
        case '\n': case '\v': case '\f': this.lineFeed(); return;
        case '\b': this.x = Math.max(0, this.x - 1); return;
        case '\t': this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8); return;
        default: return;
      }
    }
    if (this.state === 1) { // after ESC
      this.state = 0;
      switch (ch) {
        case '[': this.state = 2; this.params = ''; return;
        case ']': this.state = 3; return;
        case '(': case ')': case '*': case '+': this.state = 4; return;
        case '7': this.saved = {x: this.x, y: this.y, attr: {...this.attr}}; return;
        case '8': this.x = this.saved.x; this.y = this.saved.y; if (this.saved.attr) this.attr = {...this.saved.attr}; return;
        case 'D': this.lineFeed(); return;
        case 'E': this.x = 0; this.lineFeed(); return;
        case 'M': if (this.y === this.top) this.scrollDown(); else this.y = Math.max(0, this.y - 1); return;
        case 'c': this.reset(); return;
        default: return;
      }
    }
    if (this.state === 3) { if (ch === '\x07') this.state = 0; else if (ch === '\x1b') this.state = 5; return; } // OSC title
    if (this.state === 5) { this.state = ch === '\\' ? 0 : 3; return; }
    if (this.state === 4) { this.state = 0; return; } // charset designation: ignored
    if (code >= 0x20 && code <= 0x3f) { this.params += ch; return; }
    this.state = 0; this.csi(ch, this.params);
  }
  csi(final, raw) {
    const priv = raw.startsWith('?'), p = raw.replace(/^[?>=]/, '').split(';').map(n => parseInt(n, 10));
    const n = (i, d = 1) => (isNaN(p[i]) || p[i] === 0 ? d : p[i]);
    const clamp = () => { this.x = Math.max(0, Math.min(this.cols - 1, this.x)); this.y = Math.max(0, Math.min(this.rows - 1, this.y)); };
    const blank = () => [' ', this.attrClass()];
    const line = this.lines[this.y];
    this.wrapPending = false;
    switch (final) {
      case 'A': this.y = Math.max(this.y < this.top ? 0 : this.top, this.y - n(0)); break;
      case 'B': this.y = Math.min(this.y > this.bottom ? this.rows - 1 : this.bottom, this.y + n(0)); break;
      case 'C': this.x += n(0); clamp(); break;
      case 'D': this.x -= n(0); clamp(); break;
      case 'E': this.x = 0; this.y += n(0); clamp(); break;
      case 'F': this.x = 0; this.y -= n(0); clamp(); break;
      case 'G': case '`': this.x = n(0) - 1; clamp(); break;
      case 'd': this.y = n(0) - 1; clamp(); break;
      case 'H': case 'f': this.y = n(0) - 1; this.x = n(1) - 1; clamp(); break;
      case 'J': { const mode = p[0] || 0;
        if (mode === 0) { for (let x = this.x; x < this.cols; x++) line[x] = blank(); for (let y = this.y + 1; y < this.rows; y++) this.lines[y] = this.blankLine(); }
        else if (mode === 1) { for (let x = 0; x <= this.x; x++) line[x] = blank(); for (let y = 0; y < this.y; y++) this.lines[y] = this.blankLine(); }
        else for (let y = 0; y < this.rows; y++) this.lines[y] = this.blankLine();
        break; }
      case 'K': { const mode = p[0] || 0, from = mode === 0 ? this.x : 0, to = mode === 1 ? this.x : this.cols - 1;
        for (let x = from; x <= to; x++) line[x] = blank(); break; }
      case 'L': if (this.y >= this.top && this.y <= this.bottom) for (let i = 0; i < n(0); i++) { this.lines.splice(this.bottom, 1); this.lines.splice(this.y, 0, this.blankLine()); } break;
      case 'M': if (this.y >= this.top && this.y <= this.bottom) for (let i = 0; i < n(0); i++) { this.lines.splice(this.y, 1); this.lines.splice(this.bottom, 0, this.blankLine()); } break;
      case 'P': line.splice(this.x, n(0)); while (line.length < this.cols) line.push(blank()); break;
      case '@': for (let i = 0; i < n(0); i++) line.splice(this.x, 0, blank()); line.length = this.cols; break;
      case 'X': for (let i = 0; i < n(0) && this.x + i < this.cols; i++) line[this.x + i] = blank(); break;
      case 'S': this.scrollUp(n(0)); break;
      case 'T': this.scrollDown(n(0)); break;
      case 'r': this.top = n(0) - 1; this.bottom = Math.min(this.rows - 1, n(1, this.rows) - 1); if (this.top >= this.bottom) { this.top = 0; this.bottom = this.rows - 1; } this.x = 0; this.y = 0; break;
      case 's': this.saved = {x: this.x, y: this.y}; break;
      case 'u': this.x = this.saved.x; this.y = this.saved.y; break;
      case 'm': this.sgr(raw === '' ? [0] : p.map(v => (isNaN(v) ? 0 : v))); break;
      case 'n': if (p[0] === 6) this.report(`\x1b[${this.y + 1};${this.x + 1}R`); else if (p[0] === 5) this.report('\x1b[0n'); break;
      case 'c': if (!raw.startsWith('>')) this.report('\x1b[?1;2c'); break;
      case 'h': case 'l': if (priv) this.mode(p, final === 'h'); break;
      default: break;
    }
    this.dirty = true;
  }
  mode(list, on) {
    for (const m of list) {
      if (m === 1) this.appCursor = on;
      else if (m === 25) this.cursorVisible = on;
      else if (m === 47 || m === 1047 || m === 1049) {
        if (on && !this.alt) { if (m === 1049) this.saved = {x: this.x, y: this.y, attr: {...this.attr}}; this.alt = Array.from({length: this.rows}, () => this.blankLine()); this.lines = this.alt; }
        else if (!on && this.alt) { this.alt = null; this.lines = this.main; if (m === 1049) { this.x = this.saved.x; this.y = this.saved.y; } }
        this.top = 0; this.bottom = this.rows - 1;
      }
    }
  }
  sgr(p) {
    for (let i = 0; i < p.length; i++) {
      const v = p[i], a = this.attr;
      if (v === 0) Object.assign(a, {fg: -1, bg: -1, b: false, u: false, inv: false, dim: false});
      else if (v === 1) a.b = true; else if (v === 2) a.dim = true; else if (v === 4) a.u = true; else if (v === 7) a.inv = true;
      else if (v === 22) { a.b = false; a.dim = false; } else if (v === 24) a.u = false; else if (v === 27) a.inv = false;
      else if (v >= 30 && v <= 37) a.fg = v - 30; else if (v === 39) a.fg = -1;
      else if (v >= 40 && v <= 47) a.bg = v - 40; else if (v === 49) a.bg = -1;
      else if (v >= 90 && v <= 97) a.fg = v - 82; else if (v >= 100 && v <= 107) a.bg = v - 92;
      else if (v === 38 || v === 48) { // 256 colours and true colour, mapped to the nearest of the 16
        let c = -1;
        if (p[i + 1] === 5) { const n = p[i + 2]; c = n < 16 ? n : n >= 232 ? (n > 243 ? 15 : 8) : 7; i += 2; }
        else if (p[i + 1] === 2) { const [r, g, b] = [p[i + 2], p[i + 3], p[i + 4]]; c = (r > 127 ? 1 : 0) | (g > 127 ? 2 : 0) | (b > 127 ? 4 : 0); i += 4; }
        if (v === 38) a.fg = c; else a.bg = c;
      }
    }
  }
  text() { return this.lines.map(l => l.map(c => c[0]).join('').replace(/\s+$/, '')).join('\n'); }
}

// The screen drawn in an element, with the keyboard, paste and wheel of the browser.
export class Terminal extends Screen {
  constructor(el, send) {
    super(send);
    this.el = el;
    el.tabIndex = 0; el.setAttribute('role', 'textbox'); el.setAttribute('aria-label', 'Terminal'); el.setAttribute('aria-multiline', 'true');
    el.addEventListener('keydown', e => this.key(e));
    el.addEventListener('paste', e => { e.preventDefault(); this.send(e.clipboardData.getData('text').replace(/\r?\n/g, '\r')); });
    el.addEventListener('wheel', e => { if (this.alt) return; e.preventDefault(); this.scrollView(e.deltaY < 0 ? 3 : -3); }, {passive: false});
  }
  schedule() { if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); }); }
  draw() {
    let shown = this.lines;
    if (this.viewOffset && !this.alt) { const all = this.scrollback.concat(this.lines); shown = all.slice(all.length - this.rows - this.viewOffset, all.length - this.viewOffset); }
    const rows = shown.map((line, y) => {
      let html = '', run = '', cls = null;
      line.forEach(([ch, c], x) => {
        if (this.cursorVisible && !this.viewOffset && y === this.y && x === this.x && document.activeElement === this.el) c = (c ? c + ' ' : '') + 'cursor';
        if (c !== cls) { if (run) html += cls ? `<span class="${cls}">${esc(run)}</span>` : esc(run); run = ''; cls = c; }
        run += ch;
      });
      if (run) html += cls ? `<span class="${cls}">${esc(run)}</span>` : esc(run.replace(/\s+$/, ''));
      return `<div class="line">${html}</div>`;
    });
    this.el.innerHTML = rows.join('');
  }
  key(e) {
    const cursor = k => (this.appCursor ? '\x1bO' : '\x1b[') + k;
    const keys = {Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b', ArrowUp: cursor('A'), ArrowDown: cursor('B'), ArrowRight: cursor('C'),
      ArrowLeft: cursor('D'), Home: '\x1b[H', End: '\x1b[F', PageUp: '\x1b[5~', PageDown: '\x1b[6~', Delete: '\x1b[3~', Insert: '\x1b[2~',
      F1: '\x1bOP', F2: '\x1bOQ', F3: '\x1bOR', F4: '\x1bOS'};
    let out = null;
    if (e.ctrlKey && e.shiftKey && (e.key === 'C' || e.key === 'V')) return; // leave copy and paste to the browser
    if (e.key === 'Tab' && e.shiftKey) return; // Shift+Tab leaves the terminal, so the page stays keyboard-usable
    if (e.shiftKey && (e.key === 'PageUp' || e.key === 'PageDown')) { e.preventDefault(); this.scrollView((e.key === 'PageUp' ? 1 : -1) * (this.rows - 1)); return; }
    if (keys[e.key]) out = keys[e.key];
    else if (e.ctrlKey && !e.altKey && e.key.length === 1) { const c = e.key.toUpperCase().charCodeAt(0); if (c >= 64 && c <= 95) out = String.fromCharCode(c - 64); else if (e.key === ' ') out = '\x00'; }
    else if (e.key.length === 1 && !e.metaKey) out = (e.altKey ? '\x1b' : '') + e.key;
    if (out === null) return;
    e.preventDefault(); if (this.viewOffset) { this.viewOffset = 0; this.schedule(); } this.send(out);
  }
  // Columns and rows that fit the element, from the size of one character.
  fit() {
    const probe = document.createElement('span'); probe.textContent = 'M'.repeat(10); this.el.append(probe);
    const w = probe.getBoundingClientRect().width / 10, h = probe.getBoundingClientRect().height; probe.remove();
    if (!w || !h) return;
    const style = getComputedStyle(this.el), padX = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight), padY = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    this.resize(Math.floor((this.el.clientWidth - padX) / w), Math.floor((this.el.clientHeight - padY) / h));
  }
}
