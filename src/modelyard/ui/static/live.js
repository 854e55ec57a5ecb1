// Live charts of an endpoint: polls the section's data-live URL every 2 s and redraws
// throughput, latency (p50 solid, p99 dashed) and error rate per version with uPlot.
// Each series is named in the legend, so colour is never the only way to tell them apart.
(function () {
  "use strict";
  var section = document.querySelector("[data-live]");
  if (!section || typeof uPlot === "undefined") { return; }
  var url = section.getAttribute("data-live");
  var statusEl = section.querySelector("[data-live-status]");
  var table = section.querySelector("[data-live-table] tbody");
  var palette = ["#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#495057"];
  var charts = {};
  var versionsKey = "";

  function width(el) { return Math.max(260, el.clientWidth || 300); }

  function build(kind, versions) {
    var el = section.querySelector('[data-chart="' + kind + '"]');
    el.textContent = "";
    var series = [{}];
    versions.forEach(function (v, i) {
      var colour = palette[i % palette.length];
      if (kind === "latency") {
        series.push({ label: v + " p50", stroke: colour, width: 2 });
        series.push({ label: v + " p99", stroke: colour, width: 2, dash: [6, 4] });
      } else {
        series.push({ label: v, stroke: colour, width: 2,
                      dash: i % 2 ? [6, 4] : undefined });
      }
    });
    var opts = { width: width(el), height: 180, series: series,
                 scales: { x: { time: true } }, axes: [{}, { size: 56 }] };
    charts[kind] = { el: el, plot: new uPlot(opts, [[]].concat(series.slice(1).map(function () { return []; })), el) };
  }

  function column(points, index, scale) {
    return points.map(function (p) { return p[index] === null ? null : p[index] * scale; });
  }

  function render(doc) {
    var versions = Object.keys(doc.versions).sort();
    if (versions.join("|") !== versionsKey) {
      versionsKey = versions.join("|");
      ["rps", "latency", "errors"].forEach(function (k) { build(k, versions); });
    }
    if (!versions.length) {
      section.querySelectorAll("[data-chart]").forEach(function (el) {
        el.textContent = "No traffic in the last 5 minutes.";
      });
      return;
    }
    var x = doc.versions[versions[0]].map(function (p) { return p[0]; });
    function aligned(v) {
      var byT = {};
      doc.versions[v].forEach(function (p) { byT[Math.round(p[0])] = p; });
      return x.map(function (t) { return byT[Math.round(t)] || [t, 0, null, null, null]; });
    }
    var rps = [x], lat = [x], err = [x];
    var rows = [];
    var total = 0;
    versions.forEach(function (v) {
      var pts = aligned(v);
      rps.push(column(pts, 1, 1));
      lat.push(column(pts, 2, 1));
      lat.push(column(pts, 3, 1));
      err.push(column(pts, 4, 100));
      pts.forEach(function (p) { total += p[1] * doc.step_s; });
      rows.push([v, pts[pts.length - 1]]);
    });
    charts.rps.plot.setData(rps);
    charts.latency.plot.setData(lat);
    charts.errors.plot.setData(err);
    table.textContent = "";
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      var p = r[1];
      [r[0], p[1], p[2], p[3], p[4] === null ? null : (p[4] * 100).toFixed(2) + "%"]
        .forEach(function (value, i) {
          var td = document.createElement("td");
          if (i) { td.className = "num"; }
          td.textContent = value === null ? "–" : String(value);
          tr.appendChild(td);
        });
      table.appendChild(tr);
    });
    section.setAttribute("data-requests", String(Math.round(total)));
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) {
      charts[k].plot.setSize({ width: width(charts[k].el), height: 180 });
    });
  });
  window.modelyardPoll(url, 2000, 0, render, section, statusEl);
}());
