// The overview's traffic columns, refreshed every 5 s from overview.json without a reload.
(function () {
  "use strict";
  var wrap = document.querySelector("[data-overview]");
  if (!wrap) { return; }
  var url = wrap.getAttribute("data-overview");
  var statusEl = document.querySelector("[data-overview-status]");
  var polls = 0;

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

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (doc) {
        show(doc);
        polls += 1;
        wrap.setAttribute("data-polls", String(polls));
        statusEl.textContent = "(last " + new Date().toLocaleTimeString() + ")";
      })
      .catch(function (e) { statusEl.textContent = "(cannot update: " + e.message + ")"; })
      .then(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 5000);
}());
