"""The web pages behind the stable URLs: /n/{model}[@hash]/{layer}/{index}, /c/{claim}[/{revision}],
and the pages to browse to them: / (models), /n/{model} (layers), /n/{model}/{layer} (a grid of units), /search.
The circuit pages (/explore, /circuits, /circuits/{n}) and their forms are kb.web.circuit_pages.

A page is one or two GraphQL queries run on the same schema as /graphql (same resolvers, DataLoaders and error
codes), through kb.web.page_query (every error logged and shown: the page's main query answers the message page,
a part that failed is named in an alert at the top of the page), rendered by the Jinja2 templates in templates/
(autoescaped). Pictures are drawn on the server
(kb.web.pictures, kb.web.diagram); the only script, static/kb.js, adds tabs, filtering and tooltips to pages that
work without it. An unknown key is a 404 page that says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from graphql import GraphQLError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from kb.app import neuron_page, reader_reviews
from kb.app.pictures import Visualization
from kb.claims.content import KINDS, STATUSES
from kb.claims.ids import row_id
from kb.errors import Problem
from kb.schema.errors import with_code
from kb.web import diagram, layer_views, render_controls, text_work
from kb.web.auth.current import signed_in
from kb.web.markdown import family_slug
from kb.web.page_query import QueryFailed, failed, run_query
from kb.web.templating import local, neuron_path, read, templates, weight_texts
from kb.web.unavailable import retry_after

if TYPE_CHECKING:
    from kb.schema import Schema
    from kb.schema.context import Context
    from kb.web.thumbnails import CardPictures

CARD = """fragment Card on Neuron { key visualizations(kind: FEATURE_VIS) { kind params artifact { url } }
  claims { key label status kind } }"""

EDGE = "totalCount edges { weight magnitude method node { ...Card } }"
EDGE_K = "totalCount edges { weight magnitude method kernel node { ...Card } }"
PER_TAB = neuron_page.PER_TAB

NEURON = (
    """query($k: String!) { neuron(key: $k) { key pinnedKey index
  layer { key name units } model { key source shortHash weights weightsAreRandom }
  inExcite: inputs(first: N, orderBy: WEIGHT, sign: POSITIVE) { EK }
  inInhibit: inputs(first: N, orderBy: WEIGHT, sign: NEGATIVE) { EK }
  inStrong: inputs(first: N, orderBy: MAGNITUDE) { EK }
  outExcite: outputs(first: N, orderBy: WEIGHT, sign: POSITIVE) { E }
  outInhibit: outputs(first: N, orderBy: WEIGHT, sign: NEGATIVE) { E }
  outStrong: outputs(first: N, orderBy: MAGNITUDE) { E }
  claims { key label kind status revision supportCount disputeCount }
  visualizations { kind params artifact { url width height } }
  citation { text bibtex } }
  circuits(neuron: $k, first: 20) { edges { node { key name } } } }""".replace("N,", f"{PER_TAB},")
    .replace("{ EK }", "{ " + EDGE_K + " }")
    .replace("{ E }", "{ " + EDGE + " }")
    + CARD
)

CLAIM = """query($k: String!, $r: Int!) { claim(key: $k) { key revision model status supportCount disputeCount
  author { name }
  revisions { revision createdAt message author { name displayName }
    diffFromPrevious { field before after patch tooLarge } }
  reviews { verdict comment revision updatedAt claimRevision stale reviewer { displayName name } }
  revisionAt(revision: $r) { key revision label body kind status confidence createdAt message subjects
    circuitKey circuit { key name revision revisionKey latestRevision edges { source target note } }
    author { displayName name } authors { displayName name }
    evidence { kind note neuron source target url doi visualization }
    citation { text bibtex } } } }"""

CLAIM_REVISION = "query($k: String!) { claim(key: $k) { revision } }"

NEURONS = (
    """query($keys: [String!]!) { neurons(keys: $keys) { ...Card model { key weights weightsAreRandom } } }""" + CARD
)

SHOWCASE = 8  # rendered units on a model's card
NEWEST = 8  # claims and circuits listed below the cards
HOME = """query($showcase: Int!) { models { key source shortHash weights weightsAreRandom removed layers { key units }
  renderedUnits claimCount circuitCount
  showcase(first: $showcase) { key layer { name }
    visualizations(kind: FEATURE_VIS) { kind params artifact { url } } } } }"""
NEWEST_WORK = """query($n: Int!) { claims(first: $n, newestFirst: true) { totalCount edges { node { key label kind
    status revision supportCount disputeCount model createdAt author { name displayName } subjects { key } } } }
  circuits(first: $n) { totalCount edges { node { key name model createdAt edges { source } } } } }"""

MODEL = """query($k: String!) { model(key: $k) { key source sha256 shortHash weights weightsAreRandom description
  importedAt removed inputShape layers { key name units kind outputShape aliases } } }"""

LAYER = """query($k: String!, $after: String) { layer(key: $k) { key name units kind modulePath outputShape aliases
  model { key source sha256 shortHash weights weightsAreRandom }
  visualizations(kind: FEATURE_VIS) { index params artifact { url } } }
  claims(layer: $k, first: 100, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    edges { node { key label kind status subjects { key } } } } }"""
LAYER_HEAD = """query($k: String!) { layer(key: $k) { key name units model { key sha256 } } }"""
LAYER_CLAIMS = """query($k: String!, $after: String) { claims(layer: $k, first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { key label kind status subjects { key } } } } }"""
MAX_LAYER_CLAIMS = 500

SEARCH = (
    """query($q: String!) { searchNeurons(text: $q, first: 48) { totalCount edges { node { ...Card } } }
  searchClaims(text: $q, first: 30) { totalCount edges { node { key label kind status revision
    supportCount disputeCount subjects { key } } } } }"""
    + CARD
)

STATUS = {
    "NOT_FOUND": 404,
    "BAD_KEY": 404,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "RATE_LIMITED": 429,
    "INTERNAL": 500,
    "TIMEOUT": 503,
    "UNAVAILABLE": 503,
}
TITLES = {
    404: "Not found",
    401: "Not signed in",
    403: "Forbidden",
    429: "Too many requests",
    500: "Server error",
    503: "Try again later",
}
RENDER_TITLES = {"FEATURE_VIS": "Feature visualization", "NEURON_VIS": "Neuron (centre)", "WEIGHTS": "Weights"}
RENDER_ORDER = ["FEATURE_VIS", "FEATURE_VIS_NEG", "NEURON_VIS", "DATASET_EXAMPLES", "WEIGHTS"]
# what a render is evidence of, when a claim cites it (others: FEATURE_VISUALIZATION)
EVIDENCE_OF = {"DATASET_EXAMPLES": "DATASET_EXAMPLES", "WEIGHTS": "FEATURE_IMPLEMENTATION"}


def render_page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return templates().TemplateResponse(request, name, context, status_code=status)


def problem_page(request: Request, errors: list[GraphQLError]) -> HTMLResponse:
    first = with_code(errors[0])
    code = (first.extensions or {}).get("code", "BAD_INPUT")
    status = STATUS.get(code, 400)
    if code == "UNAVAILABLE":  # a full database pool: the reader may try again shortly
        page = message_page(request, "Busy", first.message, status)
        page.headers["retry-after"] = retry_after((first.extensions or {}).get("retryAfter", 1))[1].decode()
        return page
    return message_page(request, TITLES.get(status, "Bad request"), first.message, status)


async def query_failed(request: Request, exc: Exception) -> HTMLResponse:
    """The application's handler of a page query that failed (already logged): the message page, by its code."""
    assert isinstance(exc, QueryFailed)
    return problem_page(request, exc.errors)


def part_missing(what: str, exc: QueryFailed) -> str:
    """The line a page shows where a part of it could not be read."""
    return f"{what} could not be shown: {exc.message} ({exc.code})."


def message_page(request: Request, title: str, text: str, status: int) -> HTMLResponse:
    return render_page(request, "message.html", {"title": title, "text": text}, status)


def _scale(values: Iterable[float]) -> float:
    return max((abs(v) for v in values), default=0.0) or 1.0


def _tabs(lists: Sequence[neuron_page.Neighbours], prefix: str) -> list[dict[str, Any]]:
    """A side's three tabs (excitatory, inhibitory, by magnitude), from its three lists in that order."""
    tabs = []
    titles = (("Excite", "excitatory"), ("Inhibit", "inhibitory"), ("Strong", "by magnitude"))
    for listed, (suffix, title) in zip(lists, titles, strict=True):
        edges = listed.edges
        kernels = [e.kernel for e in edges if e.kernel]
        tabs.append(
            {
                "id": f"{prefix}-{suffix.lower()}",
                "title": title,
                "edges": edges,
                "weights": weight_texts(e.weight for e in edges),  # as many digits as tell this list's apart
                "wscale": _scale(e.weight for e in edges),
                "kscale": _scale(v for k in kernels for row in k for v in row),
            }
        )
    return tabs


def _renders(vis: list[Visualization]) -> list[dict[str, Any]]:
    out = []
    for v in vis:
        p = json.loads(v.params)
        kind = v.kind + ("_NEG" if p.get("negative") else "")
        title = {
            "FEATURE_VIS_NEG": "Negative feature visualization",
            "DATASET_EXAMPLES": f"Dataset examples ({p.get('dataset', '')})",
        }.get(kind, RENDER_TITLES.get(kind, kind))
        a = v.artifact
        height = 192  # small renders are shown enlarged (pixelated), wide ones (weights) keep their shape
        width = min(480, round(a.width * height / max(a.height, 1)))
        keep = ("size", "steps", "seed", "topK")
        out.append(
            {
                "kind": kind,
                "title": title,
                "url": local(a.url),
                "width": width,
                "height": round(a.height * width / max(a.width, 1)),
                "small": a.width < height,
                "params": ", ".join(f"{k} {p[k]}" for k in keep if p.get(k) not in (None, "", False)),
                "sha": a.url.rsplit("/", 1)[-1].partition(".")[0],  # content-addressed: cited as evidence
                "evidence": EVIDENCE_OF.get(v.kind, "FEATURE_VISUALIZATION"),
            }
        )
    out.sort(key=lambda r: RENDER_ORDER.index(r["kind"]) if r["kind"] in RENDER_ORDER else 99)
    return out


def diagram_units(nodes: list[dict[str, Any]], pictures: CardPictures) -> list[diagram.Unit]:
    """The diagram's units, each with its card picture chosen by ``pictures`` (kb.web.thumbnails.CardPictures)."""
    return [
        diagram.Unit(
            key=n["key"],
            path=neuron_path(n["key"]),
            layer=n["layer"]["name"],
            position=n["layer"]["position"],
            picture=pictures.of(n),
            labels=[c["label"] for c in n["claims"] if c["status"] not in ("RETRACTED", "REJECTED")][:3],
        )
        for n in nodes
    ]


def lacking_keys(pictures: CardPictures, nodes: Sequence[Any]) -> list[str]:
    """Keys of the cards among ``nodes`` (GraphQL answers' nodes, or kb.app.neuron_page's page and cards) that do
    not show the thumbnail preset's render, in page order."""
    return list(dict.fromkeys(read(n, "key") for n in nodes if not ((p := pictures.of(n)) and p.is_preset)))


class Pages:
    def __init__(self, schema: Schema, context_factory: Callable[[], Context]) -> None:
        self.schema = schema
        self.context_factory = context_factory

    async def _data(self, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The page's query: its errors raise QueryFailed (logged), which the app answers with the message page."""
        return await run_query(self.schema, self.context_factory(), name, query, variables)

    async def _part(
        self, name: str, query: str, variables: dict[str, Any], what: str, missing: list[str]
    ) -> dict[str, Any] | None:
        """A part of a page, asked with the server's own values: None when it fails, and ``missing`` says so."""
        try:
            return await run_query(self.schema, self.context_factory(), name, query, variables, server_side=True)
        except QueryFailed as exc:
            missing.append(part_missing(what, exc))
            return None

    async def home(self, request: Request) -> HTMLResponse:
        """Each model as a card (a strip of its rendered units, what has been rendered and said about it), then
        the newest claims and circuits: a constant number of statements, whatever the number of models."""
        pictures: CardPictures = request.app.state.pictures
        since = await pictures.since()
        data = await self._data("HOME", HOME, {"showcase": SHOWCASE})
        missing: list[str] = []
        lacking: list[str] = []
        newest = await self._part("NEWEST_WORK", NEWEST_WORK, {"n": NEWEST}, "The newest claims and circuits", missing)
        models = []
        for m in data["models"]:
            if m["removed"]:
                continue
            units = sum(layer["units"] for layer in m["layers"])
            middle = m["layers"][len(m["layers"]) // 2]["key"] if m["layers"] else None
            strip = [{"key": n["key"], "layer": n["layer"]["name"], "pic": pictures.of(n)} for n in m["showcase"]]
            lacking += [u["key"] for u in strip if not (u["pic"] and u["pic"].is_preset)]
            models.append({**m, "units": units, "strip": strip, "render_layer": middle})
        context = {
            "title": "Models",
            "models": models,
            "showcase": SHOWCASE,
            "claims": newest["claims"] if newest else None,
            "circuits": newest["circuits"] if newest else None,
            "missing": missing,
            "thumb_stream": pictures.stream(lacking, since),
        }
        return pictures.ask_later(request, render_page(request, "home.html", context), lacking)

    async def browse(self, request: Request) -> HTMLResponse:
        """/n/model, /n/model/layer and /n/model/layer/index (the model part may be pinned: model@hash)."""
        rest = request.path_params["rest"].strip("/")
        parts = rest.split("/")
        if len(parts) == 1:
            return await self._model(request, parts[0])
        if len(parts) == 2:
            return await self._layer(request, rest)
        if len(parts) == 3 and parts[2] == "renders":
            return await self.layer_renders(request, "/".join(parts[:2]))
        return await self.neuron(request, "/n/" + rest)

    async def _model(self, request: Request, text: str) -> HTMLResponse:
        model, _, pin = text.partition("@")
        m = (await self._data("MODEL", MODEL, {"k": model}))["model"]
        if pin and not m["sha256"].startswith(pin.lower()):
            return message_page(request, "Not found", f"{model} has weights {m['shortHash']}, not {pin}", 404)
        return render_page(request, "model.html", {"title": m["key"], "m": m, "model": m})

    async def neuron(
        self, request: Request, key: str, extra: dict[str, Any] | None = None, status: int = 200
    ) -> HTMLResponse:
        """The neuron page; ``extra``: what a refused form post re-shows (kb.web.annotate), with its ``status``."""
        pictures: CardPictures = request.app.state.pictures
        since = await pictures.since()
        context = self.context_factory()
        try:  # the data of the NEURON query, read by the use case (kb.app.neuron_page) without the executor
            n = await run_in_threadpool(
                neuron_page.neuron_page, context.engine, context.graphs, context.settings.public_url, key
            )
        except Problem as exc:  # an unknown key (BAD_KEY, NOT_FOUND): coded as GraphQL would
            return problem_page(request, failed("NEURON", [GraphQLError(str(exc), original_error=exc)]).errors)
        tabs = (
            _tabs((n.in_excite, n.in_inhibit, n.in_strong), "in"),
            _tabs((n.out_excite, n.out_inhibit, n.out_strong), "out"),
        )
        sides = [
            {"title": "Inputs", "total": n.in_excite.total_count + n.in_inhibit.total_count, "tabs": tabs[0]},
            {"title": "Outputs", "total": n.out_excite.total_count + n.out_inhibit.total_count, "tabs": tabs[1]},
        ]
        me = signed_in(request)
        mine: dict[str, reader_reviews.Standing] = {}  # the reader's authorship and own review of each claim
        if me and me.account.at_least("editor") and n.claims:  # (no Support/Dispute on their own claims)
            keys = [c.key for c in n.claims]
            mine = await run_in_threadpool(reader_reviews.standing, context.engine, me.account.id, keys)
        choices = await render_controls.neuron_choices(context, me) if me else None
        page = {
            "title": n.key,
            "n": n,
            "render_choices": choices,
            "model": n.model,
            "renders": _renders(n.visualizations),
            "sides": sides,
            "circuits": n.circuits,
            "kinds": KINDS,
            "mine": mine,
            **(extra or {}),
        }
        lacking = lacking_keys(pictures, [n, *(e.node for side in tabs for t in side for e in t["edges"])])
        page["live_stream"] = pictures.stream(lacking, since, always=[n.key])
        return pictures.ask_later(request, render_page(request, "neuron.html", page, status), lacking)

    async def layer_renders(self, request: Request, key: str) -> HTMLResponse:
        """/n/{model}/{layer}/renders: only the layer page's part that shows its renders' progress (what the page's
        script fetches while a render is open, instead of the whole grid)."""
        data = await self._data("LAYER_HEAD", LAYER_HEAD, {"k": key})
        layer = data["layer"]
        context = {"title": layer["key"], "layer": layer, **await self._layer_render_context(request, layer)}
        return render_page(request, "layer_renders.html", context)

    async def _layer_render_context(self, request: Request, layer: dict[str, Any]) -> dict[str, Any]:
        me = signed_in(request)
        shown = await render_controls.layer_requests(self.context_factory(), layer, me)
        return {"layer_requests": shown, "layer_open": any(r["open"] for r in shown)}

    async def _layer(
        self, request: Request, key: str, extra: dict[str, Any] | None = None, status: int = 200
    ) -> HTMLResponse:
        """The layer page; ``extra``: what a refused render form re-shows (kb.web.render_forms), with ``status``."""
        pictures: CardPictures = request.app.state.pictures
        since = await pictures.since()
        data = await self._data("LAYER", LAYER, {"k": key})
        layer, claims = data["layer"], data["claims"]
        listed, more = claims["edges"], claims["pageInfo"]
        missing: list[str] = []
        while more["hasNextPage"] and len(listed) < MAX_LAYER_CLAIMS:
            what = f"The claims after the first {len(listed)}"
            page = await self._part("LAYER_CLAIMS", LAYER_CLAIMS, {"k": key, "after": more["endCursor"]}, what, missing)
            if page is None:
                break
            listed, more = listed + page["claims"]["edges"], page["claims"]["pageInfo"]
        renders: dict[int, list[dict[str, Any]]] = {}
        for v in layer["visualizations"]:
            renders.setdefault(v["index"], []).append({**v, "kind": "FEATURE_VIS"})
        pics = {i: pictures.pick(vs) for i, vs in renders.items()}
        rendered = sum(1 for p in pics.values() if p is not None)  # units with a positive feature visualization
        chips: dict[int, list[dict[str, Any]]] = {}
        families = []
        for e in listed:
            c = e["node"]
            if c["status"] in ("RETRACTED", "REJECTED"):
                continue
            indices = [
                int(s["key"].rsplit(":", 1)[1]) for s in c["subjects"] if s["key"].startswith(layer["key"] + ":")
            ]
            for i in indices:
                chips.setdefault(i, []).append(c)
            families.append({"claim": c, "slug": family_slug(c["label"]), "count": len(indices)})
        wanted = request.query_params.get("family", "")
        shown: Sequence[int] = range(layer["units"])
        if wanted:
            shown = [i for i in shown if any(family_slug(c["label"]) == wanted for c in chips.get(i, ()))]
        known = render_controls.presets(self.context_factory().settings)
        thumbnail = known[render_controls.DEFAULT].params
        mutation = (
            f'mutation {{ requestRender(kind: FEATURE_VIS, layer: "{layer["key"]}", '
            f"params: {{ size: {thumbnail.size}, steps: {thumbnail.steps} }}) {{ id status }} }}"
        )
        views = await self._part(
            "LAYER_VIEWS", layer_views.LAYER_VIEWS, {"k": key}, "The layer's deep dream and caricatures", missing
        )
        context = {
            "title": layer["key"],
            "layer": layer,
            "model": layer["model"],
            "units": [{"index": i, "pic": pics.get(i), "claims": chips.get(i, [])} for i in shown],
            "families": sorted(families, key=lambda f: f["claim"]["label"].lower()),
            "family": wanted,
            "rendered": rendered,
            "claims_total": claims["totalCount"],
            "render_link": "/graphql?query=" + quote(mutation),
            "mutation": mutation,
            "missing": missing,
            "presets": known.values(),
            "upload_max_bytes": self.context_factory().settings.upload_max_bytes,
            "views": layer_views.section(layer["key"], views),
            **await self._layer_render_context(request, layer),
            **(extra or {}),
        }
        lacking = [f"{layer['key']}:{i}" for i in shown if not ((pic := pics.get(i)) and pic.is_preset)]
        context["thumb_stream"] = pictures.stream(lacking, since)
        return pictures.ask_later(request, render_page(request, "layer.html", context, status), lacking)

    async def claim(self, request: Request, extra: dict[str, Any] | None = None, status: int = 200) -> HTMLResponse:
        """/c/N (the current revision) or /c/N/R; ``extra`` and ``status``: a refused form post re-shown."""
        number, revision = row_id(request.path_params["number"]), request.path_params.get("revision")
        if number is None or (revision is not None and row_id(revision) is None):
            return message_page(request, "Not found", "claim pages are /c/N or /c/N/R", 404)
        if revision is None:  # the current revision
            current = await self._data("CLAIM_REVISION", CLAIM_REVISION, {"k": f"claim:{number}"})
            revision = current["claim"]["revision"]
        c = (await self._data("CLAIM", CLAIM, {"k": f"claim:{number}", "r": int(revision)}))["claim"]
        r = c["revisionAt"]
        diffs = {h["revision"]: h["diffFromPrevious"] for h in c["revisions"] if h["diffFromPrevious"]}
        keys = list(
            dict.fromkeys(r["subjects"] + [e[f] for e in r["evidence"] for f in ("neuron", "source", "target") if e[f]])
        )
        cards: dict[str, dict[str, Any]] = {}
        model: dict[str, Any] | None = None
        missing: list[str] = []
        if keys:
            found = await self._part("NEURONS", NEURONS, {"keys": keys}, "The units' cards", missing)
            if found is not None:
                cards = {n["key"]: n for n in found["neurons"]}
                model = next((n["model"] for n in found["neurons"]), None)
        body_html = await text_work.render(self.context_factory().offloop, r["body"], c["model"])
        context = {
            "title": r["label"],
            "c": c,
            "r": r,
            "body_html": body_html,
            "latest": r["revision"] == c["revision"],
            "diffs": diffs,
            "cards": cards,
            "model": model,
            "statuses": STATUSES,
            "missing": missing,
            **(extra or {}),
        }
        return render_page(request, "claim.html", context, status)

    async def search(self, request: Request) -> HTMLResponse:
        text = request.query_params.get("q", "").strip()
        context = {"title": "Search", "q": text, "neurons": None, "claims": None}
        if text:
            data = await self._data("SEARCH", SEARCH, {"q": text})
            context.update(neurons=data["searchNeurons"], claims=data["searchClaims"])
        return render_page(request, "search.html", context)
