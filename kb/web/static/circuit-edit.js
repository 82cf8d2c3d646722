// A circuit's page: "Edit" opens the edit form in place (without script it is a link to ?edit=1), and the page
// follows the circuit live (GET /events?circuit=circuit:N): when someone saves a revision, the page is read again
// and swapped in, unless the edit form holds unsaved text; then it says that a newer revision exists instead.
"use strict";
(function () {
  var root = document.getElementById("circuit");
  var banner = document.getElementById("newer");
  if (!root || !banner) return;
  var key = root.getAttribute("data-key");
  var number = key.split(":")[1];
  var current = Number(root.getAttribute("data-current"));
  var dirty = false;

  document.addEventListener("submit", function (ev) {
    var opener = ev.target.closest("form[data-edit-open]");
    if (!opener) return;
    ev.preventDefault();
    var section = document.getElementById("edit");
    var button = opener.querySelector("button");
    section.hidden = !section.hidden;
    button.setAttribute("aria-expanded", String(!section.hidden));
    if (!section.hidden) section.querySelector('input[name="name"]').focus();
  });
  document.addEventListener("input", function (ev) {
    if (ev.target.closest("form[data-edit-form]")) dirty = true;
  });
  document.addEventListener("change", function (ev) {
    if (ev.target.closest("form[data-edit-form]")) dirty = true;
  });

  function say(parts) {
    banner.textContent = "";
    parts.forEach(function (p) {
      if (typeof p === "string") { banner.append(p); return; }
      var a = document.createElement("a");
      a.href = p.href;
      a.textContent = p.text;
      banner.append(a);
    });
    banner.hidden = false;
  }

  function editing() {
    var section = document.getElementById("edit");
    return section && !section.hidden && (dirty || section.classList.contains("conflict"));
  }

  function newer(revision, who) {
    if (revision <= current) return;
    current = revision;
    var by = who ? " by " + who : "";
    var latest = root.getAttribute("data-latest") === "true";
    if (!latest || editing()) {
      say(["A newer revision exists: revision " + revision + by + ". ",
        { href: "/circuits/" + number + "/" + revision, text: "View it" }, " or ",
        { href: "/circuits/" + number, text: "reload" },
        latest ? " (your edit stays in the form; saving it will show both versions)." : "."]);
      return;
    }
    fetch("/circuits/" + number, { headers: { accept: "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error(String(r.status))); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("circuit");
        if (!fresh || editing()) return;
        var shown = Number(fresh.getAttribute("data-revision"));
        root.replaceChildren.apply(root, Array.from(fresh.childNodes).map(function (n) { return document.importNode(n, true); }));
        if (window.kbEnhance) window.kbEnhance(root);  // the fresh diagram's edge tooltips
        ["data-revision", "data-current", "data-latest"].forEach(function (a) { root.setAttribute(a, fresh.getAttribute(a)); });
        document.title = doc.title;
        current = Math.max(current, shown);
        dirty = false;
        say(["Updated without a reload: this is now revision " + shown + by + "."]);
      })
      .catch(function () {
        say(["A newer revision exists: revision " + revision + by + ". ", { href: "/circuits/" + number, text: "Reload" }]);
      });
  }

  if (!window.EventSource) return;
  var source = new EventSource("/events?circuit=" + encodeURIComponent(key));
  source.addEventListener("activity", function (message) {
    var item = JSON.parse(message.data);
    var rev = Number((item.subject.split("@")[1]) || 0);
    if (item.subject.split("@")[0] === key && rev) newer(rev, item.actor);
  });
  source.addEventListener("open", function () { // anything saved before the stream was open
    document.documentElement.dataset.live = "open"; // tests wait on it instead of sleeping
    var q = 'query($k: String!) { circuit(key: $k) { revision } }';
    fetch("/graphql?query=" + encodeURIComponent(q) + "&variables=" + encodeURIComponent(JSON.stringify({ k: key })),
      { headers: { accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (body) { if (body.data && body.data.circuit) newer(body.data.circuit.revision, ""); })
      .catch(function () {});
  });
})();
