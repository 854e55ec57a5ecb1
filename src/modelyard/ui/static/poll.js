// Shared by the live pages: fetch a JSON document every `everyMs` (the first after
// `firstMs`), hand it to `show`, count polls on `host` (data-polls) and say in `statusEl`
// when the page last updated or why it cannot.
window.modelyardPoll = function (url, everyMs, firstMs, show, host, statusEl) {
  "use strict";
  var polls = 0;
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (doc) {
        show(doc);
        polls += 1;
        host.setAttribute("data-polls", String(polls));
        statusEl.textContent = "(updated " + new Date().toLocaleTimeString() + ")";
      })
      .catch(function (e) { statusEl.textContent = "(cannot update: " + e.message + ")"; })
      .then(function () { window.setTimeout(poll, everyMs); });
  }
  window.setTimeout(poll, firstMs);
};
