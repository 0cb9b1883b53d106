/* An edition's admin page follows its send without reloads.
 *
 * Progressive enhancement: the page is complete without this (and refreshes
 * itself through a <noscript> meta refresh). While the edition is planned,
 * sending or paused, this polls the panel's JSON (EditionAdmin.live_view),
 * swaps the panel and the read-only fields a send changes, and reloads the
 * page once the status changes, so the steering buttons and the delivery
 * counts follow; never while someone is typing, and not while the tab is
 * hidden. Errors back off; nothing here changes the edition.
 */
(function () {
  "use strict";
  var panel = document.getElementById("edition-live");
  if (!panel || !panel.dataset.liveUrl) { return; }
  var url = panel.dataset.liveUrl;
  var shownStatus = panel.dataset.status;
  var delay = 1000 * (parseInt(panel.dataset.pollSeconds, 10) || 3);
  var failures = 0;
  var timer = null;
  var stopped = false;

  function typing() {
    var el = document.activeElement;
    return !!el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function apply(data) {
    panel.innerHTML = data.html;
    Object.keys(data.fields || {}).forEach(function (name) {
      var cell = document.querySelector(".field-" + name + " .readonly");
      if (cell) { cell.innerHTML = data.fields[name]; }  // escaped by the server
    });
  }

  function poll() {
    if (document.hidden) { return; }  // resumed by visibilitychange
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"},
                cache: "no-store"})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        if (data.status !== shownStatus && !typing()) {
          window.location.reload();
          return;
        }
        apply(data);
        if (data.live || data.status !== shownStatus) {
          schedule(1000 * (data.poll_seconds || 3));
        } else {
          stopped = true;  // over: nothing will change any more
        }
      })
      .catch(function () {
        failures += 1;
        schedule(Math.min(60000, delay * Math.pow(2, failures)));
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !stopped) { schedule(0); }
  });
  schedule(delay);
})();
