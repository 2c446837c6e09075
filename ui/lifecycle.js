// Everything a page starts (timers, streams, sockets) ends when the user leaves it.
const pageCleanups = [];
let pageController = new AbortController();
export function pageSignal() { return pageController.signal; }
export function onLeave(fn) { pageCleanups.push(fn); }
export function leavePage() {
  pageController.abort(); pageController = new AbortController();
  for (const fn of pageCleanups.splice(0)) { try { fn(); } catch (e) { console.error(e); } }
}
export function every(ms, fn) {
  let busy = false;
  const id = setInterval(async () => { if (document.hidden || busy) return; busy = true;
    try { await fn(); } catch (e) { if (e.name !== 'AbortError') console.warn(e); } finally { busy = false; } }, ms);
  onLeave(() => clearInterval(id));
}
