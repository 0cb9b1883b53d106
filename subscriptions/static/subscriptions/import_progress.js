/* A subscriber import's page follows its task without reloads.
 *
 * Progressive enhancement, like edition_live.js: the page is complete without
 * this (a <noscript> meta refresh). While the preview or the import runs, this
 * polls the status JSON (subscriptions.admin.imports.status_view), swaps the progress bar, and
 * reloads the page once the state changes, so the preview, its confirm button
 * or the report appear. Errors back off; nothing here changes the import.
 */
(function () {
  "use strict";
  var box = document.getElementById("import-progress");
  if (!box || !box.dataset.statusUrl) { return; }
  var delay = 1000 * (parseInt(box.dataset.pollSeconds, 10) || 2);
  var failures = 0;

  function poll() {
    fetch(box.dataset.statusUrl, {credentials: "same-origin", cache: "no-store",
                                  headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        if (data.state !== box.dataset.state || data.phase !== box.dataset.phase) {
          if (data.state !== "running" || box.dataset.state !== "queued") {
            window.location.reload();
            return;
          }
          box.dataset.state = data.state;
        }
        box.innerHTML = data.html;  // escaped by the server
        setTimeout(poll, delay);
      })
      .catch(function () {
        failures += 1;
        setTimeout(poll, Math.min(60000, delay * Math.pow(2, failures)));
      });
  }
  setTimeout(poll, delay);
})();
