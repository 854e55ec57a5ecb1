// The overview's traffic columns, refreshed every 5 s from overview.json without a reload.
(function () {
  "use strict";
  var wrap = document.querySelector("[data-overview]");
  if (!wrap) { return; }
  var url = wrap.getAttribute("data-overview");
  var statusEl = document.querySelector("[data-overview-status]");

  function number(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    if (Math.abs(v) >= 100) { return Math.round(v).toLocaleString("en"); }
    return Math.abs(v) >= 1 ? v.toFixed(2) : String(Number(v.toPrecision(3)));
  }

  function show(doc) {
    wrap.querySelectorAll("tr[data-endpoint]").forEach(function (row) {
      var d = doc[row.getAttribute("data-endpoint")];
      if (!d) { return; }
      row.querySelector('[data-field="rps"]').textContent = number(d.rps);
      row.querySelector('[data-field="p99_ms"]').textContent = number(d.p99_ms);
      row.querySelector('[data-field="error_rate"]').textContent =
        d.error_rate === null ? "\u2013" : (Math.round(d.error_rate * 10000) / 100) + "%";
    });
  }

  window.modelyardPoll(url, 5000, 5000, show, wrap, statusEl);
}());
