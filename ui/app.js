// The web UI's entry module (index.html loads it; the browser loads the imports). No framework, no build step.
import {$} from './dom.js';
import {portLinks} from './pages/containers.js';
import {containerName} from './format.js';
import {route} from './router.js';
import {dataTable} from './table.js';

window.addEventListener('hashchange', route);
document.addEventListener('keydown', e => {
  // "/" focuses the filter of the page, as in most consoles.
  if (e.key === '/' && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName) && !document.activeElement.classList.contains('term')) {
    const filter = $('main input.filter'); if (filter) { e.preventDefault(); filter.focus(); }
  }
});
// The list component, reachable from the browser console (and from the browser test that feeds it 1,000 rows).
Object.assign(window, {dataTable, containerName, portLinks});
route();
