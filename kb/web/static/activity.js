// The activity page, live: new changes are prepended as the server sends them (GET /events, server-sent events).
// The stream starts after data-since (a seq, the feed's order of commit, read before the page's rows) and the
// browser resumes it with Last-Event-ID; a change both on the page and in the stream is shown once (data-id).
"use strict";
(function () {
  const list = document.getElementById("activity");
  if (!list || !window.EventSource) return;
  const since = list.dataset.since || "0";
  const url = list.dataset.stream + (list.dataset.stream.includes("?") ? "&" : "?") + "since=" + since;
  const source = new EventSource(url);
  source.addEventListener("open", function () { document.documentElement.dataset.live = "open"; }); // tests wait on it
  source.addEventListener("activity", function (message) {
    const item = JSON.parse(message.data);
    if (list.querySelector('li[data-id="' + item.id + '"]')) return;
    const none = list.querySelector("li.none");
    if (none) none.remove();
    const li = document.createElement("li");
    li.dataset.id = String(item.id);
    const time = document.createElement("time");
    time.dateTime = item.at;
    time.textContent = item.at.slice(0, 16).replace("T", " ");
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = item.kind.toLowerCase();
    const link = document.createElement("a");
    link.href = item.url;
    link.textContent = item.subject;
    li.append(time, " ", kind, " ", link, " " + item.summary);
    list.prepend(li);
  });
})();
