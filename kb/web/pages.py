"""The web page behind every stable URL: /n/{model}[@hash]/{layer}/{index} and /c/{claim}[/{revision}], and the
pages to browse to them: / (the models), /n/{model} (its layers), /n/{model}/{layer} (its units and claims).

A page is one GraphQL query run on the same schema as /graphql (same resolvers, DataLoaders and error codes),
rendered to plain HTML with no script: what a researcher opens from a citation, and what a crawler archives.
An unknown key is a 404 page that says why; the links on a page are the neighbours' and claims' own pages.
"""

from __future__ import annotations

import json
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse

from kb.schema.errors import with_code

NEURON = """query($k: String!) { neuron(key: $k) { key pinnedKey url index
  layer { key name units } model { key source shortHash weights }
  excite: inputs(first: 10, orderBy: WEIGHT, sign: POSITIVE) { totalCount edges { weight method node { key url } } }
  inhibit: inputs(first: 5, orderBy: WEIGHT, sign: NEGATIVE) { edges { weight method node { key url } } }
  outputs(first: 10, orderBy: WEIGHT, sign: POSITIVE) { totalCount edges { weight method node { key url } } }
  claims { key label kind status revision supportCount disputeCount }
  visualizations { kind params artifact { url width height } }
  citation { text bibtex } } }"""

CLAIM = """query($k: String!, $r: Int!) { claim(key: $k) { key revision supportCount disputeCount
  revisions { revision createdAt message author { name } }
  reviews { verdict comment reviewer { displayName name } }
  revisionAt(revision: $r) { key revision label body kind status confidence createdAt message circuit subjects
    author { displayName name } evidence { kind note neuron source target url doi visualization }
    citation { text bibtex } } } }"""

MODELS = """{ models { key source shortHash weights removed layers { units } } }"""

MODEL = """query($k: String!) { model(key: $k) { key source sha256 shortHash weights description importedAt removed
  inputShape layers { key name units kind outputShape aliases } } }"""

LAYER = """query($k: String!) { layer(key: $k) { key name units kind modulePath outputShape aliases
  model { key source shortHash } visualizations(kind: FEATURE_VIS) { index artifact { url } } }
  claims(layer: $k, first: 100) { totalCount edges { node { key label kind status subjects { key } } } } }"""

STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem}.sub{color:#666}table{border-collapse:collapse}
td,th{padding:.15rem .6rem;text-align:left;border-bottom:1px solid #eee}td.n{text-align:right;font-variant:tabular-nums}
figure{display:inline-block;margin:0 1rem 1rem 0}figcaption{font-size:.8rem;color:#666}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}.body{white-space:pre-wrap}a{color:#0645ad}"""

STATUS = {"NOT_FOUND": 404, "BAD_KEY": 404}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Circuit KB'
            f'</title><meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style>'
            f'</head><body><p class="sub"><a href="/">Circuit KB</a></p>{body}'
            f'<p class="sub"><a href="/graphql">GraphQL API</a></p></body></html>')
    return HTMLResponse(html, status_code=status)


def _problem(errors: list) -> HTMLResponse:
    first = with_code(errors[0])
    code = (first.extensions or {}).get("code", "BAD_INPUT")
    status = STATUS.get(code, 400)
    title = "Not found" if status == 404 else "Bad request"
    return _page(title, f"<h1>{title}</h1><p>{escape(first.message)}</p>", status)


def _a(url_or_path: str, text: str) -> str:
    return f'<a href="{escape(url_or_path, quote=True)}">{escape(text)}</a>'


def _claim_path(key: str, revision: int | None = None) -> str:
    number = key.split(":", 1)[1].split("@", 1)[0]
    return f"/c/{number}" + (f"/{revision}" if revision else "")


def _edges(title: str, conn: dict) -> str:
    rows = "".join(f'<tr><td>{_a(e["node"]["url"], e["node"]["key"])}</td><td class="n">{e["weight"]:+.4f}</td>'
                   f'<td>{escape(e["method"])}</td></tr>' for e in conn["edges"])
    total = f' <span class="sub">(of {conn["totalCount"]})</span>' if "totalCount" in conn else ""
    if not rows:
        return f"<h3>{title}</h3><p class='sub'>none</p>"
    return f"<h3>{title}{total}</h3><table><tr><th>unit</th><th>weight</th><th></th></tr>{rows}</table>"


def _citation(c: dict) -> str:
    return f"<h2>Cite</h2><p>{escape(c['text'])}</p><pre>{escape(c['bibtex'])}</pre>"


def neuron_html(n: dict) -> tuple[str, str]:
    model, layer = n["model"], n["layer"]
    head = (f"<h1>{escape(n['key'])}</h1><p class='sub'>unit {n['index']} of {layer['units']} in "
            f"{_a('/n/' + layer['key'], layer['key'])} · {_a('/n/' + model['key'], model['source'])} · weights "
            f"{escape(model['weights'])} · pinned "
            f"<code>{escape(n['pinnedKey'])}</code></p>")
    figures = "".join(
        f'<figure><img src="{escape(v["artifact"]["url"], quote=True)}" width="{min(v["artifact"]["width"], 224)}"'
        f' alt="{escape(v["kind"])} of {escape(n["key"])}"><figcaption>{escape(v["kind"])}'
        f' {escape(_short_params(v["params"]))}</figcaption></figure>' for v in n["visualizations"])
    vis = "<h2>Visualizations</h2>" + (figures or "<p class='sub'>none rendered yet (requestRender)</p>")
    claims = "".join(f"<li>{_a(_claim_path(c['key']), c['label'])} <span class='sub'>{escape(c['kind'])}, "
                     f"{escape(c['status'])}, revision {c['revision']}, +{c['supportCount']} "
                     f"/ −{c['disputeCount']}</span></li>" for c in n["claims"])
    claims = "<h2>Claims</h2>" + (f"<ul>{claims}</ul>" if claims else "<p class='sub'>none yet</p>")
    weights = ("<h2>Connections</h2>" + _edges("Strongest excitatory inputs", n["excite"])
               + _edges("Strongest inhibitory inputs", n["inhibit"])
               + _edges("Strongest excitatory outputs", n["outputs"]))
    return n["key"], head + vis + claims + weights + _citation(n["citation"])


def _short_params(params: str) -> str:
    p = json.loads(params)
    keep = ("size", "steps", "seed", "negative", "dataset")
    return ", ".join(f"{k} {p[k]}" for k in keep if p.get(k) not in (None, "", False))


def claim_html(c: dict) -> tuple[str, str]:
    r = c["revisionAt"]
    latest = r["revision"] == c["revision"]
    head = (f"<h1>{escape(r['label'])}</h1><p class='sub'>{escape(r['key'])} · {escape(r['kind'])} · "
            f"{escape(r['status'])} · by {escape(r['author']['displayName'] or r['author']['name'])} · "
            f"{escape(str(r['createdAt'])[:10])}"
            + ("" if latest else f" · an earlier revision: {_a(_claim_path(c['key']), 'see the current one')}")
            + "</p>")
    subjects = "".join(f"<li>{_a(_neuron_path(s), s)}</li>" for s in r["subjects"])
    about = (f"<h2>About</h2><ul>{subjects}</ul>" if subjects else "") + (
        f"<p>Circuit: <code>{escape(r['circuit'])}</code></p>" if r["circuit"] else "")
    evidence = "".join(f"<li>{escape(e['kind'])}: {escape(e['note'])} {_evidence_link(e)}</li>"
                       for e in r["evidence"])
    reviews = "".join(f"<li>{escape(v['verdict'])} by {escape(v['reviewer']['displayName'] or v['reviewer']['name'])}"
                      f"{': ' + escape(v['comment']) if v['comment'] else ''}</li>" for v in c["reviews"])
    history = "".join(f"<li>{_a(_claim_path(c['key'], h['revision']), 'revision ' + str(h['revision']))} "
                      f"<span class='sub'>{escape(str(h['createdAt'])[:19])} {escape(h['author']['name'])}"
                      f"{' · ' + escape(h['message']) if h['message'] else ''}</span></li>" for h in c["revisions"])
    body = (head + f"<div class='body'>{escape(r['body'])}</div>" + about
            + (f"<h2>Evidence</h2><ul>{evidence}</ul>" if evidence else "")
            + f"<h2>Reviews <span class='sub'>+{c['supportCount']} / −{c['disputeCount']}</span></h2>"
            + (f"<ul>{reviews}</ul>" if reviews else "<p class='sub'>none yet</p>")
            + f"<h2>History</h2><ol>{history}</ol>" + _citation(r["citation"]))
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
    return f"/n/{head}/{index}"


def models_html(models: list[dict]) -> tuple[str, str]:
    rows = "".join(f"<tr><td>{_a('/n/' + m['key'], m['key'])}</td><td>{escape(m['source'])}</td>"
                   f"<td>{escape(m['weights'])}</td><td class='n'>{len(m['layers'])}</td>"
                   f"<td class='n'>{sum(l['units'] for l in m['layers'])}</td></tr>"
                   for m in models if not m["removed"])
    body = ("<h1>Circuit KB</h1><p class='sub'>The open knowledge base of vision-model neurons: every unit has a "
            "page, its connections and the claims about it.</p>"
            + (f"<table><tr><th>model</th><th>source</th><th>weights</th><th>layers</th><th>units</th></tr>"
               f"{rows}</table>" if rows else "<p>No models yet: <code>kb import lucent:inceptionv1</code></p>"))
    return "Models", body


def model_html(m: dict) -> tuple[str, str]:
    if m["removed"]:
        return m["key"], f"<h1>{escape(m['key'])}</h1><p>This model was removed; its keys are kept, not reused.</p>"
    rows = "".join(f"<tr><td>{_a('/n/' + l['key'], l['name'])}</td><td>{escape(', '.join(l['aliases']))}</td>"
                   f"<td>{escape(l['kind'])}</td><td class='n'>{l['units']}</td>"
                   f"<td>{escape('x'.join(map(str, l['outputShape'])))}</td></tr>" for l in m["layers"])
    head = (f"<h1>{escape(m['key'])}</h1><p class='sub'>{escape(m['source'])} · weights {escape(m['weights'])} · "
            f"sha256 <code>{escape(m['sha256'])}</code> (pinned keys use <code>{escape(m['key'])}@"
            f"{escape(m['shortHash'])}</code>) · imported {escape(str(m['importedAt'])[:10])}</p>"
            + (f"<p>{escape(m['description'])}</p>" if m["description"] else ""))
    return m["key"], head + ("<h2>Layers</h2><table><tr><th>layer</th><th>also</th><th>kind</th><th>units</th>"
                             f"<th>shape</th></tr>{rows}</table>")


def layer_html(layer: dict, claims: dict) -> tuple[str, str]:
    base = "/n/" + layer["key"]
    thumbs: dict[int, str] = {}
    for v in layer["visualizations"]:  # the first feature visualisation of each unit
        thumbs.setdefault(v["index"], v["artifact"]["url"])
    units = " ".join(
        f'<a href="{base}/{i}"><img src="{escape(thumbs[i], quote=True)}" width="64" height="64" alt="{i}" '
        f'title="{i}"></a>' if i in thumbs else _a(f"{base}/{i}", str(i)) for i in range(layer["units"]))
    listed = "".join(f"<li>{_a(_claim_path(e['node']['key']), e['node']['label'])} <span class='sub'>"
                     f"{escape(e['node']['kind'])}, {escape(e['node']['status'])}: "
                     f"{escape(', '.join(s['key'].rsplit(':', 1)[1] for s in e['node']['subjects']))}</span></li>"
                     for e in claims["edges"])
    more = f" <span class='sub'>(first 100 of {claims['totalCount']})</span>" if claims["totalCount"] > 100 else ""
    head = (f"<h1>{escape(layer['key'])}</h1><p class='sub'>{layer['units']} units · {escape(layer['kind'])} · "
            f"output {escape('x'.join(map(str, layer['outputShape'])))} · module <code>"
            f"{escape(layer['modulePath'])}</code> · also {escape(', '.join(layer['aliases']) or '-')} · "
            f"{_a('/n/' + layer['model']['key'], layer['model']['key'])}</p>")
    return layer["key"], (head + f"<h2>Claims{more}</h2>" + (f"<ul>{listed}</ul>" if listed else
                                                            "<p class='sub'>none yet</p>")
                          + f"<h2>Units</h2><p>{units}</p>")


class Pages:
    def __init__(self, schema, context_factory):
        self.schema = schema
        self.context_factory = context_factory

    async def _run(self, query: str, variables: dict):
        return await self.schema.execute(query, variable_values=variables, context_value=self.context_factory())

    async def home(self, request: Request) -> HTMLResponse:
        result = await self._run(MODELS, {})
        if result.errors:
            return _problem(result.errors)
        return _page(*models_html(result.data["models"]))

    async def browse(self, request: Request) -> HTMLResponse:
        """/n/model, /n/model/layer and /n/model/layer/index (the model part may be pinned: model@hash)."""
        rest = request.path_params["rest"].strip("/")
        parts = rest.split("/")
        if len(parts) == 1:
            model, _, pin = parts[0].partition("@")
            result = await self._run(MODEL, {"k": model})
            if not result.errors and pin and not result.data["model"]["sha256"].startswith(pin.lower()):
                return _page("Not found", f"<h1>Not found</h1><p>{escape(model)} has weights "
                             f"{escape(result.data['model']['shortHash'])}, not {escape(pin)}</p>", 404)
            return _problem(result.errors) if result.errors else _page(*model_html(result.data["model"]))
        if len(parts) == 2:
            result = await self._run(LAYER, {"k": rest})
            if result.errors:
                return _problem(result.errors)
            return _page(*layer_html(result.data["layer"], result.data["claims"]))
        result = await self._run(NEURON, {"k": "/n/" + rest})
        if result.errors:
            return _problem(result.errors)
        return _page(*neuron_html(result.data["neuron"]))

    async def claim(self, request: Request) -> HTMLResponse:
        number, revision = request.path_params["number"], request.path_params.get("revision")
        if not number.isdigit() or (revision is not None and not revision.isdigit()):
            return _page("Not found", "<h1>Not found</h1><p>claim pages are /c/N or /c/N/R</p>", 404)
        if revision is None:  # the current revision
            current = await self._run("query($k: String!) { claim(key: $k) { revision } }", {"k": f"claim:{number}"})
            if current.errors:
                return _problem(current.errors)
            revision = current.data["claim"]["revision"]
        result = await self._run(CLAIM, {"k": f"claim:{number}", "r": int(revision)})
        if result.errors:
            return _problem(result.errors)
        return _page(*claim_html(result.data["claim"]))
