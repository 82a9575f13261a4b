/* Live refresh of runs still in progress, on the run page and the incident page.
 *
 * The element [data-rb-live] names a small JSON endpoint (admin runbookrun/live/) and the state
 * the page was drawn from. While a run is pending, running or waiting the script asks the endpoint
 * every couple of seconds; when the state changes it fetches this same page and swaps in the
 * regions named by data-rb-live-regions — no reload, so what a person typed elsewhere on the page
 * (the incident form) stays, and open <details> stay open. It stops once nothing is in progress.
 */
(function () {
  "use strict";
  var INTERVAL_MS = 1500;

  function root() { return document.querySelector("[data-rb-live]"); }

  function openDetails(region) {
    var keys = {};
    region.querySelectorAll("details[data-key][open]").forEach(function (d) { keys[d.dataset.key] = true; });
    return keys;
  }

  // Outside the regions, the page's heading and breadcrumbs name the run with its status.
  var ALSO = ["#content > h2", ".breadcrumbs"];

  function swap(html, ids) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    ALSO.forEach(function (selector) {
      var now = document.querySelector(selector);
      var next = fresh.querySelector(selector);
      if (now && next) { now.replaceWith(next); }
    });
    document.title = fresh.title || document.title;
    ids.forEach(function (id) {
      var now = document.getElementById(id);
      var next = fresh.getElementById(id);
      if (!now || !next) { return; }
      var open = openDetails(now);
      now.replaceWith(next);
      next.querySelectorAll("details[data-key]").forEach(function (d) {
        if (open[d.dataset.key]) { d.open = true; }
      });
    });
  }

  function tick() {
    var el = root();
    if (!el || el.dataset.rbActive !== "true") { return; }
    fetch(el.dataset.rbLive, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("live status answered " + response.status); }
        return response.json();
      })
      .then(function (state) {
        if (state.signature === el.dataset.rbSignature) { return null; }
        return fetch(window.location.href, { credentials: "same-origin" })
          .then(function (response) { return response.text(); })
          .then(function (html) { swap(html, el.dataset.rbLiveRegions.split(/\s+/)); });
      })
      .catch(function (error) {
        var note = document.querySelector(".rb-live-note");
        if (note) { note.textContent = "Live refresh paused: " + error.message + ". Reload the page to see changes."; }
        el.dataset.rbActive = "false";
      })
      .then(function () { schedule(); });
  }

  function schedule() {
    var el = root();
    if (el && el.dataset.rbActive === "true") { window.setTimeout(tick, INTERVAL_MS); }
  }

  document.addEventListener("DOMContentLoaded", schedule);
})();
