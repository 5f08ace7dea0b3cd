// Live progress of one share: polls the share's JSON endpoint every 2.5 s until the share is final,
// and counts down to the manifest deadline. Loaded with defer; no inline script (strict CSP).
(function () {
  "use strict";
  var root = document.getElementById("share-progress");
  if (!root) { return; }
  var POLL_MS = 2500;

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return ""; }
    seconds = Math.max(0, Math.floor(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (d) { return d + " d " + h + " h"; }
    if (h) { return h + " h " + two(m) + " min"; }
    if (m) { return m + " min " + two(s) + " s"; }
    return s + " s";
  }

  function setText(selector, text, scope) {
    var el = (scope || document).querySelector(selector);
    if (el && el.textContent !== text) { el.textContent = text; }
    return el;
  }

  function setStatus(el, state, label) {
    if (!el) { return; }
    el.className = el.className.replace(/\bstatus-[a-z_]+/g, "").trim() + " status-" + state;
    el.textContent = label;
  }

  var initialState = root.dataset.state;
  var countdown = document.querySelector("[data-countdown]") || document.createElement("span");
  var hint = document.querySelector("[data-reload-hint]");

  function update(data) {
    setStatus(document.querySelector("[data-share-state]"), data.state, data.state_label);
    setText("[data-share-message]", data.message || "");
    var moved = data.state !== initialState;
    if (data.export) {
      var block = document.querySelector("[data-export-block]"), none = document.querySelector("[data-export-none]");
      if (block) { block.hidden = false; }
      if (none) { none.hidden = true; }
      var bar = document.querySelector("[data-export-bar]");
      if (bar) { bar.value = data.export.progress; bar.textContent = data.export.progress + "%"; }
      setText("[data-export-state]", data.export.state_label);
      setText("[data-export-percent]", String(data.export.progress));
      setText("[data-export-eta]", data.export.eta_text ? "about " + data.export.eta_text + " left" : "");
      setText("[data-export-message]", data.export.message || "");
    }
    data.recipients.forEach(function (r) {
      var row = document.querySelector('[data-recipient="' + r.id + '"]');
      if (!row) { return; }
      if (row.dataset.state !== r.state) { moved = true; }
      setStatus(row.querySelector('[data-field="state"]'), r.state, r.state_label);
      setText('[data-field="message"]', r.message || "", row);
      setText('[data-field="elapsed"]', r.elapsed_text || "", row);
      setText('[data-field="image"]', r.image_id || "", row);
    });
    if (moved && hint) { hint.hidden = false; }
    if (data.deadline) {
      countdown.dataset.deadline = data.deadline;
      var line = document.querySelector("[data-deadline-line]");
      if (line) { line.hidden = false; }
      tick();
    }
  }

  function poll() {
    fetch(root.dataset.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        update(data);
        if (!data.final) { window.setTimeout(poll, POLL_MS); }
      })
      .catch(function () { window.setTimeout(poll, POLL_MS * 4); });
  }

  function tick() {
    if (!countdown.dataset.deadline) { return; }
    var left = (Date.parse(countdown.dataset.deadline) - Date.now()) / 1000;
    countdown.textContent = left > 0 ? duration(left) + " left" : "expired";
  }
  window.setInterval(tick, 1000);

  if (root.dataset.final !== "true") { window.setTimeout(poll, POLL_MS); }
})();
