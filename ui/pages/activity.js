// Page: the activity and authentication logs, searchable, exported as CSV.
import {api} from '../api.js';
import {esc} from '../format.js';
import {$app, bindShell, shell} from '../shell.js';

export async function pageActivity(kind) {
  const columns = kind === 'authlogs' ? ['timestamp', 'username', 'origin', 'type', 'result']
                                      : ['timestamp', 'username', 'context', 'method', 'path', 'status'];
  let keyword = '', offset = 0; const limit = 50;
  $app.innerHTML = shell(`<div class="card"><div class="toolbar"><h2>${kind === 'authlogs' ? 'Authentication log' : 'Activity log'}</h2>
    <a href="#/activity">Activity</a><a href="#/activity/auth">Authentication</a>
    <input id="q" placeholder="Search" aria-label="Search the log"><a id="csv" download>Export CSV</a></div>
    <table><thead><tr>${columns.map(c => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody id="tb"></tbody></table>
    <div class="toolbar"><button id="prev">Previous</button><span id="pos" class="muted"></span><button id="next">Next</button></div></div>`);
  bindShell();
  const draw = async () => {
    const query = `keyword=${encodeURIComponent(keyword)}`;
    const page = await api('GET', `/api/useractivity/${kind}?${query}&offset=${offset}&limit=${limit}`);
    document.getElementById('csv').href = `/api/useractivity/${kind}.csv?${query}`;
    document.getElementById('tb').innerHTML = page.logs.map(e => `<tr>${columns.map(c => `<td>${c === 'timestamp' ? new Date(e[c] * 1000).toLocaleString() : esc(e[c])}</td>`).join('')}</tr>`).join('')
      || `<tr><td colspan="${columns.length}" class="muted">Nothing recorded${keyword ? ' matches' : ''}.</td></tr>`;
    document.getElementById('pos').textContent = page.totalCount ? `${offset + 1}–${offset + page.logs.length} of ${page.totalCount}` : '';
    document.getElementById('prev').disabled = offset === 0;
    document.getElementById('next').disabled = offset + limit >= page.totalCount;
  };
  let timer = null;
  document.getElementById('q').oninput = e => { clearTimeout(timer); timer = setTimeout(() => { keyword = e.target.value; offset = 0; draw(); }, 250); };
  document.getElementById('prev').onclick = () => { offset = Math.max(0, offset - limit); draw(); };
  document.getElementById('next').onclick = () => { offset += limit; draw(); };
  await draw();
}
