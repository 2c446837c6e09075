// Data table: client-side filter, sort, selection; fast for tens of thousands of rows. The filter and sort are pure
// functions (searchIndex, sortedIndex, filteredRows: unit-tested in ui/tests/); dataTable draws them and keeps the
// selection.
import {$, $$} from './dom.js';
import {esc} from './format.js';

// One collator for every sort: localeCompare with options builds a new one per comparison, seconds for big tables.
const collator = new Intl.Collator(undefined, {numeric: true});

// Each row's search text, computed once per data set, not on every key press: [[row, text], ...].
export function searchIndex(rows, columns) {
  return rows.map(row => [row, columns.map(c => c.value ? String(c.value(row) ?? '') : '').join(' ').toLowerCase()]);
}
// The index sorted by the column sort.key (numbers as numbers, text in natural order: "app-2" before "app-10"),
// each row's sort value read once: done when the data or the sort changes, never on a key press.
export function sortedIndex(index, columns, sort) {
  const col = columns.find(c => c.key === sort.key); const dir = sort.asc ? 1 : -1;
  if (!col || !col.value) return index.slice();
  const keyed = index.map(entry => [entry, col.value(entry[0])]);
  keyed.sort(([, x], [, y]) => (typeof x === 'number' && typeof y === 'number' ? x - y
    : collator.compare(String(x ?? ''), String(y ?? ''))) * dir);
  return keyed.map(([entry]) => entry);
}
// The rows of a sorted index whose text holds every word of the filter, in the index's order.
export function filteredRows(sorted, filterText) {
  const words = filterText.toLowerCase().split(/\s+/).filter(Boolean);
  const out = [];
  for (const [row, text] of sorted) if (words.every(w => text.includes(w))) out.push(row);
  return out;
}
export const visibleRows = (index, columns, filterText, sort) => filteredRows(sortedIndex(index, columns, sort), filterText);

// columns: [{key, label, value: row => sortable value, html: row => cell HTML, cls}]; id: row => unique id.
export function dataTable(el, {columns, id, rows = [], selectable = false, filterPlaceholder = 'Filter', actions = '', empty = 'Nothing here yet.',
                       sortKey, limit = 200, onSelectionChange = () => {}}) {
  let data = rows, sort = {key: sortKey || columns[0].key, asc: true}, shown = limit, filterText = '';
  const selected = new Set();
  el.innerHTML = `<div class="toolbar"><input class="filter" type="search" placeholder="${esc(filterPlaceholder)}" aria-label="${esc(filterPlaceholder)}">
    ${actions}<span class="spacer"></span><span class="muted small count"></span></div>
    <div class="table-wrap"><table><thead><tr>${selectable ? '<th class="check"><input type="checkbox" class="select-all" aria-label="Select all"></th>' : ''}
    ${columns.map(c => `<th class="${c.value ? 'sortable' : ''} ${(c.cls || '').includes('hide-sm') ? 'hide-sm' : ''}" data-key="${c.key}" ${c.value ? 'tabindex="0"' : ''}>${esc(c.label)}</th>`).join('')}
    </tr></thead><tbody></tbody></table></div><div class="more"></div>`;
  const tbody = $('tbody', el), filter = $('.filter', el), count = $('.count', el), more = $('.more', el);
  // Sorted once per data set or sort; each key press only filters it and draws the first `limit` rows. More rows
  // are appended as the list scrolls into view (or with the button), so typing stays fast with 10,000 rows.
  let sorted = [], rowsNow = [], drawn = 0;
  const reindex = () => { sorted = sortedIndex(searchIndex(data, columns), columns, sort); };
  const shownRows = () => filteredRows(sorted, filterText);
  const rowHtml = row => { const rid = String(id(row));
    return `<tr data-id="${esc(rid)}">${selectable ? `<td class="check"><input type="checkbox" class="select" value="${esc(rid)}" ${selected.has(rid) ? 'checked' : ''} aria-label="Select row"></td>` : ''}${columns.map(c => `<td class="${c.cls || ''}">${c.html ? c.html(row) : esc(c.value(row))}</td>`).join('')}</tr>`; };
  const showMore = () => {
    more.innerHTML = rowsNow.length > drawn ? `<button class="show-more">Show ${rowsNow.length - drawn} more</button>` : '';
  };
  const appendRows = () => {
    const next = rowsNow.slice(drawn, drawn + Math.max(limit, 200));
    if (!next.length) return;
    tbody.insertAdjacentHTML('beforeend', next.map(rowHtml).join('')); drawn += next.length; shown = drawn; showMore();
  };
  const draw = () => {
    rowsNow = shownRows();
    const ids = new Set(data.map(id)); for (const s of [...selected]) if (!ids.has(s)) selected.delete(s);
    drawn = Math.min(rowsNow.length, shown);
    tbody.innerHTML = rowsNow.slice(0, drawn).map(rowHtml).join('')
      || `<tr><td colspan="${columns.length + (selectable ? 1 : 0)}" class="empty">${data.length ? 'No match for this filter.' : esc(empty)}</td></tr>`;
    count.textContent = `${rowsNow.length} of ${data.length}` + (selected.size ? ` · ${selected.size} selected` : '');
    showMore();
    $$('th[data-key]', el).forEach(th => { th.classList.toggle('sorted-asc', th.dataset.key === sort.key && sort.asc); th.classList.toggle('sorted-desc', th.dataset.key === sort.key && !sort.asc); });
    const all = $('.select-all', el); if (all) all.checked = rowsNow.length > 0 && rowsNow.every(r => selected.has(String(id(r))));
  };
  // Key presses within one frame are drawn once, in the next frame: no fixed debounce to wait for.
  let frame = 0;
  filter.addEventListener('input', () => { if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; filterText = filter.value; shown = limit; draw(); }); });
  const sortBy = th => { if (!th.classList.contains('sortable')) return; sort = {key: th.dataset.key, asc: sort.key === th.dataset.key ? !sort.asc : true}; reindex(); draw(); };
  $('thead', el).addEventListener('click', e => { const th = e.target.closest('th[data-key]'); if (th) sortBy(th); });
  $('thead', el).addEventListener('keydown', e => { const th = e.target.closest('th[data-key]'); if (th && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); sortBy(th); } });
  el.addEventListener('change', e => {
    if (e.target.classList.contains('select')) { e.target.checked ? selected.add(e.target.value) : selected.delete(e.target.value); }
    else if (e.target.classList.contains('select-all')) { for (const r of shownRows()) e.target.checked ? selected.add(String(id(r))) : selected.delete(String(id(r))); $$('.select', tbody).forEach(b => { b.checked = e.target.checked; }); }
    else return;
    count.textContent = `${shownRows().length} of ${data.length}` + (selected.size ? ` · ${selected.size} selected` : ''); onSelectionChange(selected);
  });
  more.addEventListener('click', () => { shown = Infinity; draw(); });
  if (typeof IntersectionObserver === 'function') {
    new IntersectionObserver(entries => { if (entries.some(e => e.isIntersecting)) appendRows(); }, {rootMargin: '400px'}).observe(more);
  }
  reindex(); draw();
  return {
    setRows(newRows) { data = newRows; reindex(); draw(); onSelectionChange(selected); },
    selected: () => [...selected],
    clearSelection() { selected.clear(); draw(); onSelectionChange(selected); },
    rows: () => data,
  };
}

