// The device table refreshes itself: every 3 s (while the page is shown) its rows are fetched, rendered by the
// server as on the page, and swapped in, so a health or state change shows without a reload.
(function () {
  "use strict";
  const table = document.getElementById("devices");
  if (!table || !table.dataset.refresh) return;
  const body = table.tBodies[0];
  let busy = false;
  let last = null;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const answer = await fetch(table.dataset.refresh, {headers: {Accept: "text/html"}, cache: "no-store"});
      if (answer.ok) {
        const rows = await answer.text();
        if (rows !== last) body.innerHTML = rows;  // unchanged rows stay as they are (a selection survives)
        last = rows;
        table.dataset.refreshed = String(Date.now());
      }
    } catch (err) {
      // the server is away for a moment: the next round tries again
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, 3000);
  document.addEventListener("visibilitychange", refresh);
})();
