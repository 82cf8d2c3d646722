// /explore's form: the perNode input's max follows the depth chosen (the largest that fits the query budget at
// that depth, given by the server in data-max-per-depth), so the form offers only what the API will draw.
"use strict";
(function () {
  var per = document.querySelector("form.explore input[name=perNode][data-max-per-depth]");
  var depth = document.querySelector("form.explore input[name=depth]");
  if (!per || !depth) return;
  var most = JSON.parse(per.getAttribute("data-max-per-depth"));
  function follow() {
    var m = most[String(depth.value)];
    if (m) per.max = String(m);
  }
  depth.addEventListener("input", follow);
  follow();
})();

// /explore, signed in: the selection of units and edges lives in the form's check boxes (which work without
// script); this mirrors it on the diagram and lets a click, Enter or Space on a unit or an edge toggle it.
"use strict";
(function () {
  var form = document.querySelector("form[data-selection]");
  var svg = document.querySelector("[data-diagram] svg.diagram");
  if (!form || !svg) return;
  var mode = form.querySelector("[data-select-mode]");
  var count = form.querySelector("[data-count]");
  form.querySelector(".select-mode").hidden = false;

  var units = {}, edges = {};
  form.querySelectorAll('input[name="unit"]').forEach(function (box) { units[box.value] = box; });
  form.querySelectorAll('input[name="edge"]').forEach(function (box) { edges[box.value] = box; });

  function boxOf(el) {
    if (el.matches("a.unit")) return units[el.getAttribute("data-unit")];
    return edges[el.getAttribute("data-source") + "|" + el.getAttribute("data-target")];
  }

  function paint() {
    var u = 0, e = 0;
    svg.querySelectorAll("a.unit[data-unit], g.edge[data-source]").forEach(function (el) {
      var box = boxOf(el);
      var on = !!(box && box.checked);
      el.classList.toggle("selected", on);
      var label = el.getAttribute("data-label") || el.getAttribute("aria-label") || "";
      if (!el.hasAttribute("data-label")) el.setAttribute("data-label", label);
      el.setAttribute("aria-label", on ? label + " (selected)" : label);
    });
    Object.keys(units).forEach(function (k) { if (units[k].checked) u++; });
    Object.keys(edges).forEach(function (k) { if (edges[k].checked) e++; });
    count.textContent = u + (u === 1 ? " unit" : " units") + " and " + e + (e === 1 ? " edge" : " edges") + " selected";
  }

  function toggle(el) {
    var box = boxOf(el);
    if (!box) return;
    box.checked = !box.checked;
    if (box.checked && box.name === "edge") { // an edge's ends belong to the circuit too
      var ends = box.value.split("|");
      ends.forEach(function (k) { if (units[k]) units[k].checked = true; });
    }
    paint();
  }

  function target(ev) {
    var el = ev.target.closest && ev.target.closest("a.unit[data-unit], g.edge[data-source]");
    if (!el) return null;
    if (el.matches("a.unit") && !mode.checked) return null; // a unit's link opens its page
    return el;
  }

  svg.addEventListener("click", function (ev) {
    var el = target(ev);
    if (!el) return;
    ev.preventDefault();
    toggle(el);
  });
  svg.addEventListener("keydown", function (ev) {
    if (ev.key !== " " && ev.key !== "Enter") return;
    var el = target(ev);
    if (!el) return;
    ev.preventDefault();
    toggle(el);
  });
  form.addEventListener("change", function (ev) {
    var box = ev.target;
    if (box.name === "edge" && box.checked) {
      box.value.split("|").forEach(function (k) { if (units[k]) units[k].checked = true; });
    }
    paint();
  });
  form.querySelector("[data-clear]").addEventListener("click", function () {
    Object.keys(units).forEach(function (k) { units[k].checked = false; });
    Object.keys(edges).forEach(function (k) { edges[k].checked = false; });
    paint();
  });
  // a unit's picture (an SVG link) is focusable; make the edges' focus order and units' state visible
  svg.querySelectorAll("a.unit[data-unit]").forEach(function (a) { a.setAttribute("aria-describedby", "select-help"); });
  var help = document.createElement("p");
  help.id = "select-help";
  help.className = "sr";
  help.textContent = "Enter or Space toggles the selection while 'Clicking the diagram selects' is on.";
  form.prepend(help);
  paint();
})();
