// Circuit KB pages: progressive enhancement only (every page works without this file).
// Tabs (neuron page), the family filter (layer page) and edge tooltips (diagrams).
(function () {
  "use strict";

  function tabs(box) {
    var list = box.querySelectorAll('[role="tab"]');
    box.classList.add("js");
    function select(tab, focus) {
      list.forEach(function (t) {
        var on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
      if (focus) tab.focus();
    }
    list.forEach(function (t, i) {
      t.addEventListener("click", function () { select(t, false); });
      t.addEventListener("keydown", function (ev) {
        var step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
        if (ev.key === "Home") step = -i;
        if (ev.key === "End") step = list.length - 1 - i;
        if (step === undefined) return;
        ev.preventDefault();
        select(list[(i + step + list.length) % list.length], true);
      });
    });
    select(list[0], false);
  }

  function filter(form) {
    var select = form.querySelector("select");
    var cards = document.querySelectorAll("#units .card");
    function apply() {
      var want = select.value;
      cards.forEach(function (c) {
        c.hidden = want !== "" && c.getAttribute("data-labels").split("|").indexOf(want) < 0;
      });
      var url = new URL(window.location.href);
      if (want) url.searchParams.set("family", want); else url.searchParams.delete("family");
      window.history.replaceState(null, "", url);
    }
    select.addEventListener("change", function () {
      // the server listed only one family's units: reload for the others
      if (cards.length && document.querySelectorAll("#units .card").length < Number(form.getAttribute("data-units") || 0)) form.submit();
      else apply();
    });
  }

  var SVG = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function colour(v, s) {
    var t = s > 0 ? Math.min(1, Math.abs(v) / s) : 0;
    var end = v >= 0 ? [178, 24, 43] : [33, 102, 172];
    return "rgb(" + end.map(function (c) { return Math.round(255 + (c - 255) * t); }).join(",") + ")";
  }

  function diagram(svg) {
    var tip = svg.querySelector(".tip");
    function show(edge, ev) {
      while (tip.firstChild) tip.removeChild(tip.firstChild);
      var kernel = edge.getAttribute("data-kernel") ? JSON.parse(edge.getAttribute("data-kernel")) : null;
      var text = edge.getAttribute("data-title");
      var cell = kernel ? Math.max(3, Math.floor(60 / Math.max(kernel.length, kernel[0].length))) : 0;
      var kw = kernel ? kernel[0].length * cell : 0, kh = kernel ? kernel.length * cell : 0;
      var w = Math.max(kw, text.length * 6.2) + 16, h = kh + 32;
      var box = edge.getBBox();
      var vb = svg.viewBox.baseVal;
      var x = Math.min(box.x + box.width / 2 + 8, vb.width - w - 2), y = Math.max(2, box.y + box.height / 2 - h / 2);
      var g = el("g", { transform: "translate(" + x + "," + y + ")" }, tip);
      el("rect", { class: "bg", width: w, height: h, rx: 4 }, g);
      el("text", { x: 8, y: 16 }, g).textContent = text;
      if (kernel) {
        var s = 0;
        kernel.forEach(function (r) { r.forEach(function (v) { s = Math.max(s, Math.abs(v)); }); });
        kernel.forEach(function (r, j) {
          r.forEach(function (v, i) {
            el("rect", { x: 8 + i * cell, y: 24 + j * cell, width: cell, height: cell, fill: colour(v, s) }, g);
          });
        });
      }
      tip.setAttribute("visibility", "visible");
    }
    function hide() { tip.setAttribute("visibility", "hidden"); }
    svg.querySelectorAll(".edge").forEach(function (edge) {
      edge.addEventListener("mouseenter", function () { show(edge); });
      edge.addEventListener("focus", function () { show(edge); });
      edge.addEventListener("mouseleave", hide);
      edge.addEventListener("blur", hide);
    });
  }

  // also called by the scripts that swap in a fresh part of a page (live updates), on that part
  function enhance(root) {
    root.querySelectorAll("[data-tabs]").forEach(tabs);
    root.querySelectorAll("form[data-filter]").forEach(filter);
    root.querySelectorAll("[data-diagram] svg.diagram").forEach(diagram);
  }
  window.kbEnhance = enhance;
  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
})();
