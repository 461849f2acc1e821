// LabFleet console: confirmations, live panels over Server-Sent Events, charts. Pages work without it.
"use strict";
(function () {
  // Forms and buttons with data-confirm ask first (the text comes translated from the page).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var btn = ev.submitter;
    var text = (btn && btn.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { ev.preventDefault(); ev.stopImmediatePropagation(); }
  }, true);
  document.addEventListener("htmx:confirm", function (ev) {
    var text = ev.detail.elt.getAttribute("data-confirm");
    if (text && !ev.detail.elt.matches("form")) {
      ev.preventDefault();
      if (window.confirm(text)) { ev.detail.issueRequest(true); }
    }
  });

  // A partial update answered by the console's error page (403, 404, 500 with its incident number): show
  // that page's content in place of the main area, not nothing and never half a table.
  document.addEventListener("htmx:beforeSwap", function (ev) {
    var xhr = ev.detail.xhr;
    if (xhr.status < 400 || xhr.responseText.indexOf('class="error-page"') < 0) { return; }
    var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    var fresh = doc.querySelector("main");
    var main = document.querySelector("main");
    if (fresh && main) { ev.detail.shouldSwap = false; main.replaceWith(fresh); }
  });

  // Live panels: <section data-live="/cockpit/stream"> with [data-field="a.b"] children updated from SSE JSON.
  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? o : o[k]; }, obj);
  }
  function applyLive(root, data) {
    root.querySelectorAll("[data-field]").forEach(function (el) {
      var v = get(data, el.getAttribute("data-field"));
      if (v !== undefined && v !== null) { el.textContent = v; }
    });
    root.querySelectorAll("[data-value]").forEach(function (el) {
      var v = get(data, el.getAttribute("data-value"));
      if (typeof v === "number") { el.value = Math.min(100, Math.max(0, v)); }
    });
    var dot = root.querySelector(".live-dot");
    if (dot) { dot.classList.remove("stale"); }
    root.setAttribute("data-updated", String(Date.now()));
  }
  function startLive(root) {
    var url = root.getAttribute("data-live");
    if (!url || !window.EventSource) { return; }
    var es = new EventSource(url);
    es.addEventListener("update", function (ev) { applyLive(root, JSON.parse(ev.data)); });
    es.addEventListener("signin", function () { es.close(); window.location.reload(); });
    es.onerror = function () { var d = root.querySelector(".live-dot"); if (d) { d.classList.add("stale"); } };
  }

  // Charts: <div class="chart" data-chart='{echarts option}'>.
  function startCharts() {
    if (!window.echarts) { return; }
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var chart = window.echarts.init(el, null, { renderer: "svg" });
      chart.setOption(JSON.parse(el.getAttribute("data-chart")));
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(startLive);
    startCharts();
  });
})();
