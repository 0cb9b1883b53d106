/* Sign-up: preselect the reader's time zone from the browser.
   Progressive enhancement: without this script the select keeps the server's
   choice (UTC) and the form works the same. A static file, so a strict
   Content-Security-Policy (script-src 'self') allows it. The server marks the
   form with data-timezone-from-browser only when nobody chose a zone yet. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-timezone-from-browser]");
  var select = form && form.querySelector('select[name="timezone"]');
  if (!select || typeof Intl === "undefined") return;
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (error) {
    return;
  }
  if (!zone) return;
  // Browsers report ICU's names, often the old aliases ("Asia/Calcutta"); the
  // list holds canonical names only, so map through the page's alias table.
  var table = document.getElementById("timezone-aliases");
  var aliases = table ? JSON.parse(table.textContent) : {};
  zone = aliases[zone] || zone;
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) {
      select.value = zone;
      return;
    }
  }
})();
