// Text for the page: HTML escaping, sizes, dates, ids. Pure functions (unit-tested in ui/tests/).
export const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
export function fmtBytes(n) { if (!n && n !== 0) return ''; const u = ['B', 'KB', 'MB', 'GB', 'TB']; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`; }
export function fmtDate(t) { if (!t) return ''; const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? '' : d.toLocaleString(); }
export function fmtAgo(t) { const s = Math.max(0, Date.now() / 1000 - (typeof t === 'number' ? t : Date.parse(t) / 1000));
  if (s < 60) return `${Math.floor(s)} s ago`; if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`; return `${Math.floor(s / 86400)} days ago`; }
export const shortId = id => String(id || '').replace(/^sha256:/, '').slice(0, 12);
export const containerName = c => ((c.Names && c.Names[0]) || c.Name || '').replace(/^\//, '');
