// Live pages (progressive enhancement: every form works without this file): neuron and claim pages, and the pages
// whose unit cards wait for thumbnails (kb.web.thumbnails).
//
// A page that names a stream (<meta name="kb-live" content="/events?..." data-page="/n/...">) follows it: on each
// change (a claim, a review, a render) it fetches its own page again and swaps in the parts marked data-live, adds
// the new items of lists marked data-live-list, and swaps in the unit cards' pictures that changed (data-thumb).
// Forms are never inside a swapped part, so nothing typed is lost. Review forms (data-enhance) post in place; the
// Render button (data-render) shows the jobs' progress until the picture appears. A page part marked data-poll (a
// layer render still open) is fetched again every few seconds (from the meta's data-renders-part, else the page) until
// it comes back without the mark; the layer's Render and Cancel forms (data-render-control) post in place and start
// that. A page without a stream (content="") only polls.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="kb-live"]');
  const pageUrl = meta ? meta.dataset.page : window.location.pathname;
  const pollUrl = (meta && meta.dataset.rendersPart) || pageUrl;
  let busy = false;
  let again = false;
  let timer = null;

  function parse(html) {
    return new DOMParser().parseFromString(html, "text/html");
  }

  function apply(doc) {
    doc.querySelectorAll("[data-live-list]").forEach(function (list) {
      const mine = document.getElementById(list.id);
      if (!mine) return;
      let prev = null;
      Array.from(list.children).forEach(function (child) {
        let have = child.id ? document.getElementById(child.id) : null;
        if (!have) {
          have = document.importNode(child, true);
          if (prev) prev.after(have);
          else mine.prepend(have);
        }
        prev = have;
      });
    });
    doc.querySelectorAll("[data-live]").forEach(function (part) {
      const mine = document.getElementById(part.id);
      if (mine && mine.hasAttribute("data-live")) mine.replaceWith(document.importNode(part, true));
    });
    swapPictures(doc);
    const current = document.getElementById("edit-current");
    const expected = document.querySelector('#edit-form input[name="expectedRevision"]');
    const stale = document.getElementById("edit-stale");
    if (current && expected && stale) stale.hidden = current.dataset.revision === expected.value;
  }

  // Unit cards' pictures (data-thumb: a unit's key): one that changed on the server (a thumbnail landed in place
  // of a placeholder or of a fallback) replaces the page's, wherever that unit is shown.
  function swapPictures(doc) {
    const fresh = new Map();
    doc.querySelectorAll("[data-thumb]").forEach(function (el) {
      if (!fresh.has(el.dataset.thumb)) fresh.set(el.dataset.thumb, el);
    });
    document.querySelectorAll("[data-thumb]").forEach(function (mine) {
      const theirs = fresh.get(mine.dataset.thumb);
      if (theirs && theirs.innerHTML !== mine.innerHTML) mine.replaceWith(document.importNode(theirs, true));
    });
  }

  async function refresh(url) {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const answer = await fetch(url || pageUrl, { headers: { accept: "text/html" }, cache: "no-store" });
      if (answer.ok) apply(parse(await answer.text()));
    } catch (err) {
      // offline for a moment: the next change tries again
    }
    busy = false;
    if (again) {
      again = false;
      refresh();
    }
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(function () { refresh(); }, 150);
  }

  const POLL_MS = 2000;
  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    while (document.querySelector("[data-poll]")) {
      await new Promise(function (r) { setTimeout(r, POLL_MS); });
      await refresh(pollUrl);
    }
    polling = false;
  }
  poll();

  if (meta && meta.content && window.EventSource) {
    const source = new EventSource(meta.content);
    source.addEventListener("activity", soon);
    source.addEventListener("open", function () { document.documentElement.dataset.live = "open"; }); // tests wait on it
  }

  function fields(form, submitter) {
    const body = new URLSearchParams(new FormData(form));
    if (submitter && submitter.name) body.append(submitter.name, submitter.value);
    return body;
  }

  // Support / Dispute: post in place; the counts come back with the page.
  document.addEventListener("submit", async function (ev) {
    const form = ev.target;
    if (!form.matches("form[data-enhance]")) return;
    ev.preventDefault();
    const error = form.querySelector('[role="alert"]');
    const buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      const answer = await fetch(form.action, { method: "POST", body: fields(form, ev.submitter) });
      const doc = parse(await answer.text());
      if (answer.ok) {
        apply(doc);
        const comment = form.querySelector('input[name="comment"]');
        if (comment) comment.value = "";
        if (error) error.textContent = "";
      } else if (error) {
        const theirs = doc.getElementById(error.id) || doc.querySelector('[role="alert"]');
        error.textContent = theirs && theirs.textContent.trim() ? theirs.textContent.trim() : "refused (" + answer.status + ")";
      }
    } catch (err) {
      if (error) error.textContent = "could not reach the server: try again";
    }
    buttons.forEach(function (b) { b.disabled = false; });
  });

  // A layer's Render and Cancel: post in place, then follow the layer's renders until none is open.
  document.addEventListener("submit", async function (ev) {
    const form = ev.target;
    if (!form.matches("form[data-render-control]")) return;
    ev.preventDefault();
    const status = document.getElementById("layer-render-status");
    const button = form.querySelector("button");
    function say(text, error) {
      if (!status) return;
      status.textContent = text;
      status.classList.toggle("error", error);
    }
    button.disabled = true;
    say(form.action.endsWith("/cancel") ? "cancelling…" : "requesting…", false);
    try {
      const answer = await fetch(form.action, { method: "POST", body: fields(form), headers: { accept: "application/json" } });
      const data = await answer.json();
      if (!answer.ok) throw new Error(data.error || "refused (" + answer.status + ")");
      say(data.cancelled !== undefined ? data.cancelled + " jobs cancelled" : data.jobs + " units asked for", false);
      await refresh(pollUrl);
      poll();
    } catch (err) {
      say(err.message, true);
    }
    if (button.isConnected) button.disabled = false;
  });

  // The render form's data set choice is shown only for the kind it belongs to (dataset examples).
  const kind = document.getElementById("r-kind");
  function kindChosen() {
    document.querySelectorAll("[data-for-kind]").forEach(function (el) {
      el.hidden = el.dataset.forKind !== kind.value;
    });
  }
  if (kind) {
    kind.addEventListener("change", kindChosen);
    kindChosen();
  }

  // Render: request the jobs, then follow them (a small GraphQL query) until the pictures are there.
  const JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id status progress error } }";
  document.addEventListener("submit", async function (ev) {
    const form = ev.target;
    if (!form.matches("form[data-render]")) return;
    ev.preventDefault();
    const bar = form.querySelector("progress");
    const status = form.querySelector('[role="status"]');
    const button = form.querySelector("button");
    function show(text, value, error) {
      status.textContent = text;
      status.classList.toggle("error", Boolean(error));
      if (value === null) bar.hidden = true;
      else {
        bar.hidden = false;
        bar.value = value;
      }
    }
    button.disabled = true;
    show("requesting…", 0);
    try {
      const answer = await fetch(form.action, { method: "POST", body: fields(form), headers: { accept: "application/json" } });
      const data = await answer.json();
      if (!answer.ok) throw new Error(data.error || "refused (" + answer.status + ")");
      let jobs = data.jobs;
      const ids = jobs.map(function (j) { return j.id; });
      for (;;) {
        const done = jobs.filter(function (j) { return j.status === "DONE"; }).length;
        const failed = jobs.filter(function (j) { return j.status === "FAILED" || j.status === "CANCELLED"; });
        const progress = jobs.reduce(function (s, j) { return s + j.progress; }, 0) / jobs.length;
        if (failed.length) throw new Error("render " + failed[0].status.toLowerCase() + ": " + (failed[0].error || "unknown error"));
        if (done === jobs.length) break;
        show(jobs.map(function (j) { return j.status.toLowerCase(); }).join(", ") + " · " + Math.round(progress * 100) + "%", progress);
        await new Promise(function (r) { setTimeout(r, 1500); });
        const url = "/graphql?query=" + encodeURIComponent(JOBS) + "&variables=" + encodeURIComponent(JSON.stringify({ ids: ids }));
        const polled = await (await fetch(url, { headers: { accept: "application/json" }, cache: "no-store" })).json();
        if (polled.errors) throw new Error(polled.errors[0].message);
        jobs = polled.data.renderJobs;
      }
      show("rendered", null);
      await refresh();
    } catch (err) {
      show(err.message, null, true);
    }
    button.disabled = false;
  });
})();
