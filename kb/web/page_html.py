"""HTML for the pages: plain data (the GraphQL results) in, a title and an HTML body out. No script; every
string from the database is escaped here."""

from __future__ import annotations

import json
from html import escape

from starlette.responses import HTMLResponse

from kb.graph.keys import NeuronKey

STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem}.sub{color:#666}table{border-collapse:collapse}
td,th{padding:.15rem .6rem;text-align:left;border-bottom:1px solid #eee}td.n{text-align:right;font-variant:tabular-nums}
figure{display:inline-block;margin:0 1rem 1rem 0}figcaption{font-size:.8rem;color:#666}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}.body{white-space:pre-wrap}a{color:#0645ad}"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Circuit KB'
        f'</title><meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style>'
        f'</head><body><p class="sub"><a href="/">Circuit KB</a></p>{body}'
        f'<p class="sub"><a href="/graphql">GraphQL API</a></p></body></html>'
    )
    return HTMLResponse(html, status_code=status)


def _a(url_or_path: str, text: str) -> str:
    return f'<a href="{escape(url_or_path, quote=True)}">{escape(text)}</a>'


def _claim_path(key: str, revision: int | None = None) -> str:
    number = key.split(":", 1)[1].split("@", 1)[0]
    return f"/c/{number}" + (f"/{revision}" if revision else "")


def _edges(title: str, conn: dict) -> str:
    rows = "".join(
        f'<tr><td>{_a(e["node"]["url"], e["node"]["key"])}</td><td class="n">{e["weight"]:+.4f}</td>'
        f"<td>{escape(e['method'])}</td></tr>"
        for e in conn["edges"]
    )
    total = f' <span class="sub">(of {conn["totalCount"]})</span>' if "totalCount" in conn else ""
    if not rows:
        return f"<h3>{title}</h3><p class='sub'>none</p>"
    return f"<h3>{title}{total}</h3><table><tr><th>unit</th><th>weight</th><th></th></tr>{rows}</table>"


def _citation(c: dict) -> str:
    return f"<h2>Cite</h2><p>{escape(c['text'])}</p><pre>{escape(c['bibtex'])}</pre>"


def neuron_html(n: dict) -> tuple[str, str]:
    model, layer = n["model"], n["layer"]
    head = (
        f"<h1>{escape(n['key'])}</h1><p class='sub'>unit {n['index']} of {layer['units']} in "
        f"{_a('/n/' + layer['key'], layer['key'])} · {_a('/n/' + model['key'], model['source'])} · weights "
        f"{escape(model['weights'])} · pinned "
        f"<code>{escape(n['pinnedKey'])}</code></p>"
    )
    figures = "".join(
        f'<figure><img src="{escape(v["artifact"]["url"], quote=True)}" width="{min(v["artifact"]["width"], 224)}"'
        f' alt="{escape(v["kind"])} of {escape(n["key"])}"><figcaption>{escape(v["kind"])}'
        f" {escape(_short_params(v['params']))}</figcaption></figure>"
        for v in n["visualizations"]
    )
    vis = "<h2>Visualizations</h2>" + (figures or "<p class='sub'>none rendered yet (requestRender)</p>")
    claims = "".join(
        f"<li>{_a(_claim_path(c['key']), c['label'])} <span class='sub'>{escape(c['kind'])}, "
        f"{escape(c['status'])}, revision {c['revision']}, +{c['supportCount']} "
        f"/ −{c['disputeCount']}</span></li>"
        for c in n["claims"]
    )
    claims = "<h2>Claims</h2>" + (f"<ul>{claims}</ul>" if claims else "<p class='sub'>none yet</p>")
    weights = (
        "<h2>Connections</h2>"
        + _edges("Strongest excitatory inputs", n["excite"])
        + _edges("Strongest inhibitory inputs", n["inhibit"])
        + _edges("Strongest excitatory outputs", n["outputs"])
    )
    return n["key"], head + vis + claims + weights + _citation(n["citation"])


def _short_params(params: str) -> str:
    p = json.loads(params)
    keep = ("size", "steps", "seed", "negative", "dataset")
    return ", ".join(f"{k} {p[k]}" for k in keep if p.get(k) not in (None, "", False))


def claim_html(c: dict) -> tuple[str, str]:
    r = c["revisionAt"]
    latest = r["revision"] == c["revision"]
    head = (
        f"<h1>{escape(r['label'])}</h1><p class='sub'>{escape(r['key'])} · {escape(r['kind'])} · "
        f"{escape(r['status'])} · by {escape(', '.join(a['displayName'] or a['name'] for a in r['authors']))} · "
        f"{escape(str(r['createdAt'])[:10])}"
        + ("" if latest else f" · an earlier revision: {_a(_claim_path(c['key']), 'see the current one')}")
        + "</p>"
    )
    subjects = "".join(f"<li>{_a(_neuron_path(s), s)}</li>" for s in r["subjects"])
    about = (f"<h2>About</h2><ul>{subjects}</ul>" if subjects else "") + (
        f"<p>Circuit: <code>{escape(r['circuit'])}</code></p>" if r["circuit"] else ""
    )
    evidence = "".join(f"<li>{escape(e['kind'])}: {escape(e['note'])} {_evidence_link(e)}</li>" for e in r["evidence"])
    reviews = "".join(
        f"<li>{escape(v['verdict'])} by {escape(v['reviewer']['displayName'] or v['reviewer']['name'])}"
        f"{': ' + escape(v['comment']) if v['comment'] else ''}"
        + (
            f" <span class='sub'>(of revision {v['claimRevision']}: older than the current content)</span>"
            if v["stale"]
            else ""
        )
        + "</li>"
        for v in c["reviews"]
    )
    history = "".join(
        f"<li>{_a(_claim_path(c['key'], h['revision']), 'revision ' + str(h['revision']))} "
        f"<span class='sub'>{escape(str(h['createdAt'])[:19])} {escape(h['author']['name'])}"
        f"{' · ' + escape(h['message']) if h['message'] else ''}</span></li>"
        for h in c["revisions"]
    )
    body = (
        head
        + f"<div class='body'>{escape(r['body'])}</div>"
        + about
        + (f"<h2>Evidence</h2><ul>{evidence}</ul>" if evidence else "")
        + f"<h2>Reviews <span class='sub'>+{c['supportCount']} / −{c['disputeCount']}</span></h2>"
        + (f"<ul>{reviews}</ul>" if reviews else "<p class='sub'>none yet</p>")
        + f"<h2>History</h2><ol>{history}</ol>"
        + _citation(r["citation"])
    )
    return r["label"], body


def _evidence_link(e: dict) -> str:
    if e.get("url"):
        return _a(e["url"], e["url"])
    if e.get("doi"):
        return _a(f"https://doi.org/{e['doi']}", f"doi:{e['doi']}")
    if e.get("neuron"):
        return _a(_neuron_path(e["neuron"]), e["neuron"])
    if e.get("source") and e.get("target"):
        return _a(_neuron_path(e["source"]), e["source"]) + " → " + _a(_neuron_path(e["target"]), e["target"])
    return ""


def _neuron_path(key: str) -> str:
    """inceptionv1/mixed4c:447 → /n/inceptionv1/mixed4c/447 (canonical keys, as claims store them)."""
    head, _, index = key.rpartition(":")
    model, _, layer = head.partition("/")
    return NeuronKey(model, layer, int(index)).path()


def models_html(models: list[dict]) -> tuple[str, str]:
    rows = "".join(
        f"<tr><td>{_a('/n/' + m['key'], m['key'])}</td><td>{escape(m['source'])}</td>"
        f"<td>{escape(m['weights'])}</td><td class='n'>{len(m['layers'])}</td>"
        f"<td class='n'>{sum(l['units'] for l in m['layers'])}</td></tr>"
        for m in models
        if not m["removed"]
    )
    body = (
        "<h1>Circuit KB</h1><p class='sub'>The open knowledge base of vision-model neurons: every unit has a "
        "page, its connections and the claims about it.</p>"
        + (
            f"<table><tr><th>model</th><th>source</th><th>weights</th><th>layers</th><th>units</th></tr>{rows}</table>"
            if rows
            else "<p>No models yet: <code>kb import lucent:inceptionv1</code></p>"
        )
    )
    return "Models", body


def model_html(m: dict) -> tuple[str, str]:
    if m["removed"]:
        return m["key"], f"<h1>{escape(m['key'])}</h1><p>This model was removed; its keys are kept, not reused.</p>"
    rows = "".join(
        f"<tr><td>{_a('/n/' + l['key'], l['name'])}</td><td>{escape(', '.join(l['aliases']))}</td>"
        f"<td>{escape(l['kind'])}</td><td class='n'>{l['units']}</td>"
        f"<td>{escape('x'.join(map(str, l['outputShape'])))}</td></tr>"
        for l in m["layers"]
    )
    head = (
        f"<h1>{escape(m['key'])}</h1><p class='sub'>{escape(m['source'])} · weights {escape(m['weights'])} · "
        f"sha256 <code>{escape(m['sha256'])}</code> (pinned keys use <code>{escape(m['key'])}@"
        f"{escape(m['shortHash'])}</code>) · imported {escape(str(m['importedAt'])[:10])}</p>"
        + (f"<p>{escape(m['description'])}</p>" if m["description"] else "")
    )
    return m["key"], head + (
        "<h2>Layers</h2><table><tr><th>layer</th><th>also</th><th>kind</th><th>units</th>"
        f"<th>shape</th></tr>{rows}</table>"
    )


def layer_html(layer: dict, claims: dict) -> tuple[str, str]:
    base = "/n/" + layer["key"]
    thumbs: dict[int, str] = {}
    for v in layer["visualizations"]:  # the first feature visualisation of each unit
        thumbs.setdefault(v["index"], v["artifact"]["url"])
    units = " ".join(
        f'<a href="{base}/{i}"><img src="{escape(thumbs[i], quote=True)}" width="64" height="64" alt="{i}" '
        f'title="{i}"></a>'
        if i in thumbs
        else _a(f"{base}/{i}", str(i))
        for i in range(layer["units"])
    )
    listed = "".join(
        f"<li>{_a(_claim_path(e['node']['key']), e['node']['label'])} <span class='sub'>"
        f"{escape(e['node']['kind'])}, {escape(e['node']['status'])}: "
        f"{escape(', '.join(s['key'].rsplit(':', 1)[1] for s in e['node']['subjects']))}</span></li>"
        for e in claims["edges"]
    )
    more = f" <span class='sub'>(first 100 of {claims['totalCount']})</span>" if claims["totalCount"] > 100 else ""
    head = (
        f"<h1>{escape(layer['key'])}</h1><p class='sub'>{layer['units']} units · {escape(layer['kind'])} · "
        f"output {escape('x'.join(map(str, layer['outputShape'])))} · module <code>"
        f"{escape(layer['modulePath'])}</code> · also {escape(', '.join(layer['aliases']) or '-')} · "
        f"{_a('/n/' + layer['model']['key'], layer['model']['key'])}</p>"
    )
    return layer["key"], (
        head
        + f"<h2>Claims{more}</h2>"
        + (f"<ul>{listed}</ul>" if listed else "<p class='sub'>none yet</p>")
        + f"<h2>Units</h2><p>{units}</p>"
    )
