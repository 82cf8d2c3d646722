"""The circuit pages and their forms: /explore (a subgraph as a diagram; signed in, a selection of its units and
edges saved as a new circuit or added to one), /circuits, and /circuits/N[/R] (a circuit, its revision history
with what each revision changed, and for signed-in people an edit form).

Every write is a GraphQL mutation (createCircuit, updateCircuit) run on the same schema as /graphql, with the
signed-in session's account in the context: roles, rate limits, revisions and EDIT_CONFLICT hold exactly as in the
API. The forms are plain posts checked by kb.web.auth.forms (same origin, the session's CSRF token); a refused or
stale edit re-shows the form with what was typed, and a stale edit shows the current version beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from graphql import parse
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from kb.claims import circuits as circuit_domain
from kb.claims.ids import row_id
from kb.schema import query
from kb.web import diagram, text_work
from kb.web.auth import forms
from kb.web.auth.current import signed_in
from kb.web.auth.pages import AuthPages
from kb.web.check_forms import check_view
from kb.web.page_query import ContextFor, QueryFailed, run_query
from kb.web.pages import CARD, diagram_units, lacking_keys, message_page, part_missing, render_page
from kb.web.templating import plural

if TYPE_CHECKING:
    from kb.claims.accounts import Account
    from kb.schema import Schema
    from kb.schema.offloop import OffLoop
    from kb.web.thumbnails import CardPictures

MAX_FORM = 512 * 1024  # a selection or an edit names up to MAX_EDGES edges
MAX_FIELDS = 2 * circuit_domain.MAX_EDGES + circuit_domain.MAX_NEURONS + 20
NO_STORE = {"cache-control": "no-store"}
STATUS = {
    "EDIT_CONFLICT": 409,
    "FORBIDDEN": 403,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
}

EXPLORE = (
    """query($roots: [String!]!, $direction: Direction!, $depth: Int!, $perNode: Int!, $sign: Sign!,
  $orderBy: NeighborOrder!) {
  subgraph(roots: $roots, direction: $direction, depth: $depth, perNode: $perNode, sign: $sign, orderBy: $orderBy) {
    nodes { ...Card layer { name position } model { key weights weightsAreRandom } }
    edges { source { key } target { key } weight kernel } } }"""
    + CARD
)
OF_MODEL = """query($model: String!) { circuits(model: $model, first: 50) {
  edges { node { key name revision edges { source } } } } }"""

CIRCUIT = (
    """query($k: String!) { circuit(key: $k) { key name description model createdAt url revision
  edges { source target note }
  neurons { ...Card layer { name position } model { key weights weightsAreRandom } }
  check { allExist allExcitatory edges { source target note exists weight sign rank inputs reason } }
  claims { key label kind status revision supportCount disputeCount }
  experiments { key circuitKey circuitRevision olderRevision dataset ablation images draws reduction model pinnedHash
    versions createdAt targets { target sourceLayer sourceUnits sources mFull mEmpty mCircuit mWithoutCircuit
      sufficiency necessity randomSufficiency { mean std } randomNecessity { mean std } edges { source effect }
      badges sufficiencyBeatsRandom necessityBeatsRandom } }
  revisions { key revision createdAt message name description neurons edges { source target note }
    author { name displayName } citation { text bibtex } } } }"""
    + CARD
)

CIRCUITS = """query($model: String, $neuron: String, $after: String) {
  circuits(model: $model, neuron: $neuron, first: 50, after: $after) { totalCount
    pageInfo { hasNextPage endCursor } edges { node { key name model createdAt revision edges { source } } } } }"""

CREATE = """mutation($i: CircuitInput!) { createCircuit(input: $i) { key revision } }"""
EDGES_AT = """query($k: String!) { circuit(key: $k) { key revision edges { source target } } }"""
UPDATE = """mutation($k: String!, $r: Int!, $p: CircuitPatch!, $m: String!) {
  updateCircuit(key: $k, expectedRevision: $r, patch: $p, message: $m) { key revision } }"""


DIRECTIONS = ("UPSTREAM", "DOWNSTREAM", "BOTH")
# which of a unit's edges the explore form follows (the API's sign and orderBy), as the form words them
SIGNS = {"POSITIVE": "excitatory", "NEGATIVE": "inhibitory", "ANY": "both"}
ORDERS = {"WEIGHT": "weight", "MAGNITUDE": "magnitude"}
FORM_KEYS = ("roots", "direction", "depth", "perNode", "sign", "orderBy")
_EXPLORE_DOCUMENT = parse(EXPLORE)
# what a reader typed into the explore form can cause: the form again with the message, and this status
FORM_CODES = {"BAD_INPUT": 400, "LIMIT_EXCEEDED": 400, "NOT_FOUND": 404, "BAD_KEY": 404}


def followed(direction: str, per_node: int, sign: str, order: str) -> str:
    """What the diagram follows from each unit, in words (the sign and the ranking the form chose)."""
    ends = {"UPSTREAM": "input", "DOWNSTREAM": "output", "BOTH": "input and output"}[direction]
    which = {"POSITIVE": "most excitatory", "NEGATIVE": "most inhibitory", "ANY": "strongest"}[sign]
    if order == "MAGNITUDE":
        how = " by kernel magnitude ‖K‖" + (" (either sign)" if sign == "ANY" else "")
    else:
        how = " by signed weight (largest first)" if sign == "ANY" else " by weight"
    count = (
        f"{which} {ends}"
        if per_node == 1
        else f"{per_node} {which} {ends.replace('input', 'inputs').replace('output', 'outputs')}"
    )
    return f"Each unit's {count}{how}."


class FormProblem(Exception):
    """A write refused by the API (or the form): its code, message and the page status to answer with."""

    def __init__(self, code: str, message: str, extensions: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions or {}
        self.status = STATUS.get(code, 400)


def _one(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0]


def _text(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _pair(value: str) -> tuple[str, str] | None:
    source, sep, target = value.partition("|")
    return (source, target) if sep and source and target else None


def _refused(request: Request, exc: forms.Refused) -> HTMLResponse:
    title = {401: "Not signed in", 403: "Forbidden"}.get(exc.status, "Bad request")
    response = message_page(request, title, exc.message, exc.status)
    response.headers.update(NO_STORE)
    return response


class CircuitPages:
    def __init__(self, schema: Schema, context_factory: ContextFor, auth: AuthPages, pictures: CardPictures) -> None:
        self.schema = schema
        self.pictures = pictures  # kb.web.thumbnails.CardPictures: the units' pictures in the diagrams
        self.context_factory = context_factory  # (account or None) -> a kb.schema.context.Context
        self.auth = auth  # its session_post checks every form post (origin, session, CSRF)

    async def _data(
        self,
        name: str,
        query: str,
        variables: dict[str, Any],
        account: Account | None = None,
        server_side: bool = False,
    ) -> dict[str, Any]:
        """The query's data: its errors raise QueryFailed (logged), which the app answers with the message page."""
        context = self.context_factory(account)
        return await run_query(self.schema, context, name, query, variables, server_side)

    def _offloop(self) -> OffLoop | None:
        """The pool the pages' GraphQL runs on (kb.schema.offloop), for their text work too."""
        offloop: OffLoop | None = self.context_factory(None).offloop
        return offloop

    async def _write(self, name: str, query: str, variables: dict[str, Any], account: Account) -> dict[str, Any]:
        """A mutation as the signed-in account; FormProblem with the API's code when it is refused."""
        try:
            return await self._data(name, query, variables, account)
        except QueryFailed as exc:
            ext = dict(exc.extensions)
            ext.pop("code", None)
            raise FormProblem(exc.code, exc.message, ext) from None

    # --- /explore ------------------------------------------------------------------------------------------

    async def explore(self, request: Request) -> HTMLResponse:
        return await self._explore(request, dict(request.query_params))

    async def _explore(
        self,
        request: Request,
        q: dict[str, str],
        chosen: dict[str, Any] | None = None,
        error: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        roots = [r.strip() for r in q.get("roots", "").replace("\n", ",").split(",") if r.strip()]
        form = {
            "roots": ", ".join(roots),
            "direction": q.get("direction", "UPSTREAM").upper(),
            "depth": q.get("depth", "2"),
            "perNode": q.get("perNode", "5"),
            "sign": q.get("sign", "POSITIVE").upper(),
            "orderBy": q.get("orderBy", "WEIGHT").upper(),
        }
        chosen = chosen or {"units": set(), "edges": set(), "name": "", "description": "", "circuit": ""}
        direction = form["direction"] if form["direction"] in DIRECTIONS else "UPSTREAM"
        context: dict[str, Any] = {
            "title": "Explore",
            "form": form,
            "svg": None,
            "chosen": chosen,
            "error": error,
            "bounds": self._bounds(max(1, len(roots)), direction),
            "signs": SIGNS,
            "orders": ORDERS,
        }

        def refused(message: str, code: int = 400) -> HTMLResponse:
            """The form again, with what was typed and why it was refused (a limit names the largest that fit)."""
            return render_page(request, "explore.html", {**context, "error": message}, code)

        if not roots:
            return render_page(request, "explore.html", context, status)
        if form["direction"] not in DIRECTIONS:
            return refused("direction is UPSTREAM, DOWNSTREAM or BOTH")
        if form["sign"] not in SIGNS or form["orderBy"] not in ORDERS:
            return refused("edges are POSITIVE, NEGATIVE or ANY; ranked by WEIGHT or MAGNITUDE")
        try:
            depth, per_node = int(form["depth"]), int(form["perNode"])
        except ValueError:
            return refused("depth and perNode are whole numbers")
        if not 1 <= depth <= query.MAX_DEPTH or not 1 <= per_node <= query.MAX_PER_NODE:  # the API's own limits
            return refused(f"depth must be 1..{query.MAX_DEPTH} and perNode 1..{query.MAX_PER_NODE}")
        variables = {
            "roots": roots,
            "direction": form["direction"],
            "depth": depth,
            "perNode": per_node,
            "sign": form["sign"],
            "orderBy": form["orderBy"],
        }
        pictures = self.pictures
        since = await pictures.since()
        try:
            sub = (await self._data("EXPLORE", EXPLORE, variables))["subgraph"]
        except QueryFailed as exc:
            if exc.code not in FORM_CODES:
                raise  # the server's trouble (a timeout, a full pool): the message page with its status
            message = exc.message
            if exc.code == "LIMIT_EXCEEDED":
                most = context["bounds"]["perNode"].get(str(depth)) if 1 <= depth <= query.MAX_DEPTH else None
                message += f" (at depth {depth}, perNode up to {most})" if most else ""
            return refused(message, FORM_CODES[exc.code])
        edges = [diagram.Edge(e["source"]["key"], e["target"]["key"], e["weight"], e["kernel"]) for e in sub["edges"]]
        label = (
            f"{form['direction'].lower()} subgraph of {form['roots']}, depth {depth}, {per_node} per node, "
            f"{SIGNS[form['sign']]} edges by {ORDERS[form['orderBy']]}"
        )
        model = sub["nodes"][0]["model"] if sub["nodes"] else None
        circuits: list[dict[str, Any]] = []
        missing: list[str] = []
        if model and signed_in(request):
            try:
                listed = await self._data("OF_MODEL", OF_MODEL, {"model": model["key"]}, server_side=True)
                circuits = [e["node"] for e in listed["circuits"]["edges"]]
            except QueryFailed as exc:
                missing.append(part_missing(f"The circuits of {model['key']} to add to", exc))
        context.update(
            svg=diagram.svg(diagram_units(sub["nodes"], pictures), edges, label),
            nodes=len(sub["nodes"]),
            edges=len(edges),
            model=model,
            units=sorted(
                sub["nodes"],
                key=lambda n: (-n["layer"]["position"], int(n["key"].rsplit(":", 1)[1])),
            ),
            edge_list=edges,
            followed=followed(form["direction"], per_node, form["sign"], form["orderBy"]),
            circuits=circuits,
            missing=missing,
            back="/explore?" + urlencode(form),
        )
        lacking = lacking_keys(pictures, sub["nodes"])
        context["thumb_stream"] = pictures.stream(lacking, since)
        return pictures.ask_later(request, render_page(request, "explore.html", context, status), lacking)

    def _bounds(self, roots: int, direction: str) -> dict[str, Any]:
        """The largest depth and perNode the form's inputs offer: the API's limits (kb.schema.query), and for each
        depth the largest perNode whose subgraph fits the query budget with this many roots (the page's inputs
        follow it as depth changes, static/explore-select.js)."""
        limits = self.schema.limits
        analysis = limits.analysis(EXPLORE, _EXPLORE_DOCUMENT)

        def fits(depth: int, per_node: int) -> bool:
            values = {"roots": ["x"] * roots, "direction": direction, "depth": depth, "perNode": per_node}
            return limits.refusal(limits.cost(analysis, None, values)) is None

        per_depth: dict[str, int] = {}
        for depth in range(1, query.MAX_DEPTH + 1):  # the cost grows with perNode: the largest that fits, by halves
            low, high = 0, query.MAX_PER_NODE
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if fits(depth, mid) else (low, mid - 1)
            per_depth[str(depth)] = low
        return {"depth": query.MAX_DEPTH, "maxPerNode": query.MAX_PER_NODE, "perNode": per_depth}

    async def explore_post(self, request: Request) -> Response:
        """The selection form: "Save as circuit" (createCircuit) or "Add to circuit" (updateCircuit at the
        revision the page showed; EDIT_CONFLICT re-reads the list and says so). Success: the circuit's page."""
        try:
            info, fields = await self.auth.session_post(request, lists=True, max_bytes=MAX_FORM, max_fields=MAX_FIELDS)
        except forms.Refused as exc:
            return _refused(request, exc)
        q = {k: _one(fields, k) for k in FORM_KEYS}
        q = {k: v for k, v in q.items() if v or k not in ("sign", "orderBy")}  # a form without them: the defaults
        units = list(dict.fromkeys(u for u in fields.get("unit", []) if u))
        pairs = list(dict.fromkeys(p for p in (_pair(v) for v in fields.get("edge", [])) if p))
        chosen: dict[str, Any] = {
            "units": set(units),
            "edges": {f"{s}|{t}" for s, t in pairs},
            "name": _one(fields, "name"),
            "description": _text(_one(fields, "description")),
            "circuit": _one(fields, "circuit"),
        }
        action = _one(fields, "action")
        try:
            if not units and not pairs:
                raise FormProblem("BAD_INPUT", "select units or edges first (the check boxes under the diagram)")
            if action == "save":
                made = await self._write(
                    "CREATE",
                    CREATE,
                    {
                        "i": {
                            "name": chosen["name"],
                            "description": chosen["description"],
                            "neurons": units,
                            "edges": [{"source": s, "target": t} for s, t in pairs],
                        }
                    },
                    info.account,
                )
                key = made["createCircuit"]["key"]
            elif action == "add":
                key = await self._add(chosen["circuit"], units, pairs, info.account)
            else:
                raise FormProblem("BAD_INPUT", "press Save as circuit or Add to circuit")
        except FormProblem as exc:
            text = exc.message
            if exc.code == "EDIT_CONFLICT":
                number = chosen["circuit"].partition("@")[0]
                chosen["circuit"] = number  # the list is read again: the same circuit, at its new revision
                text = (
                    f"Nothing was added: circuit:{number} was changed by someone else since this page was drawn "
                    f"(it is now at revision {exc.extensions.get('currentRevision')}). The list is read again: "
                    "look at the circuit, then press Add to circuit again."
                )
            response = await self._explore(request, q, chosen, text, exc.status)
            response.headers.update(NO_STORE)
            return response
        return RedirectResponse("/circuits/" + key.split(":", 1)[1], status_code=303, headers=NO_STORE)

    async def _add(self, choice: str, units: list[str], pairs: list[tuple[str, str]], account: Account) -> str:
        """The selection added to circuit N at the revision R the form named (choice: N@R)."""
        number, _, rev = choice.partition("@")
        if row_id(number) is None or row_id(rev) is None:
            raise FormProblem("BAD_INPUT", "choose the circuit to add to")
        key = f"circuit:{number}"
        try:
            at = await self._data("EDGES_AT", EDGES_AT, {"k": f"{key}@{rev}"})
        except QueryFailed as exc:
            raise FormProblem(exc.code, exc.message) from None
        present = {(e["source"], e["target"]) for e in at["circuit"]["edges"]}
        # an edge the circuit has keeps its note (the API would replace it with the selection's empty one)
        new = [{"source": s, "target": t} for s, t in pairs if (s, t) not in present]
        patch = {"addNeurons": units, "edges": new}
        message = f"added {plural(len(new), 'edge')} from /explore"
        await self._write("UPDATE", UPDATE, {"k": key, "r": int(rev), "p": patch, "m": message}, account)
        return key

    # --- /circuits -----------------------------------------------------------------------------------------

    async def circuits(self, request: Request) -> HTMLResponse:
        q = request.query_params
        variables = {"model": q.get("model") or None, "neuron": q.get("neuron") or None, "after": q.get("after")}
        data = await self._data("CIRCUITS", CIRCUITS, variables)
        context = {"title": "Circuits", "circuits": data["circuits"], "filters": variables}
        return render_page(request, "circuits.html", context)

    # --- /circuits/N[/R] -----------------------------------------------------------------------------------

    async def circuit(self, request: Request, extra: dict[str, Any] | None = None, status: int = 200) -> HTMLResponse:
        number, revision = request.path_params["number"], request.path_params.get("revision")
        if row_id(number) is None or not (revision is None or row_id(revision) is not None):
            return message_page(
                request, "Not found", "circuit pages are /circuits/N, or /circuits/N/R for a revision", 404
            )
        context = await self._circuit_context(number, revision)
        context["editing"] = request.query_params.get("edit") == "1"
        context.update(await check_view(self.context_factory(None), signed_in(request), int(number)))
        context.update(extra or {})
        return render_page(request, "circuit.html", context, status)

    async def _circuit_context(self, number: str, revision: str | None) -> dict[str, Any]:
        """The page's data (QueryFailed when its query fails)."""
        key = f"circuit:{number}" + (f"@{revision}" if revision else "")
        c = (await self._data("CIRCUIT", CIRCUIT, {"k": key}))["circuit"]
        revs = c["revisions"]
        checks = {(e["source"], e["target"]): e for e in c["check"]["edges"]}
        edges = [
            diagram.Edge(
                e["source"], e["target"], checks.get((e["source"], e["target"]), {}).get("weight"), None, e["note"]
            )
            for e in c["edges"]
        ]
        # off the event loop: bounded diffs (cached per pair of texts) and the description's Markdown (cached)
        diffs, description_html = await text_work.off_loop(
            self._offloop(), "CIRCUIT_TEXT", text_work.circuit_texts, revs, c["description"], c["model"]
        )
        shown = revs[c["revision"] - 1] if 0 < c["revision"] <= len(revs) else None
        return {
            "title": c["name"],
            "c": c,
            "number": number,
            "current": len(revs),
            "latest": c["revision"] == len(revs),
            "shown": shown,
            "history": list(reversed(revs)),
            "diffs": diffs,
            "description_html": description_html,
            "svg": diagram.svg(diagram_units(c["neurons"], self.pictures), edges, f"circuit {c['name']}"),
            "cards": {n["key"]: n for n in c["neurons"]},
            "model": c["neurons"][0]["model"] if c["neurons"] else None,
            "mine": None,
            "conflict": None,
            "error": "",
        }

    async def circuit_post(self, request: Request) -> Response:
        """The edit form: Name, Description, each edge's note or its removal, at the revision the form showed.
        A stale revision is the conflict view: their current version beside the form, with what was typed."""
        number = request.path_params["number"]
        if row_id(number) is None:
            return message_page(request, "Not found", "no such circuit", 404)
        try:
            info, fields = await self.auth.session_post(request, lists=True, max_bytes=MAX_FORM, max_fields=MAX_FIELDS)
        except forms.Refused as exc:
            return _refused(request, exc)
        base_revision = row_id(_one(fields, "revision"))
        if base_revision is None:
            return message_page(request, "Bad request", "the form does not say which revision it edits", 400)
        context = await self._circuit_context(number, None)
        revs = list(reversed(context["history"]))
        if not 1 <= base_revision <= len(revs):
            return message_page(request, "Bad request", f"circuit:{number} has revisions 1..{len(revs)}", 400)
        base = revs[base_revision - 1]
        mine = _mine(fields, base)
        patch: dict[str, Any] = {"removeEdges": [], "edges": []}
        if mine["name"] != base["name"]:
            patch["name"] = mine["name"]
        if mine["description"] != base["description"]:
            patch["description"] = mine["description"]
        for e in base["edges"]:
            pair = (e["source"], e["target"])
            if pair in mine["remove"]:
                patch["removeEdges"].append({"source": pair[0], "target": pair[1]})
            elif pair in mine["notes"]:
                patch["edges"].append({"source": pair[0], "target": pair[1], "note": mine["notes"][pair]})
        try:
            await self._write(
                "UPDATE",
                UPDATE,
                {"k": f"circuit:{number}", "r": base_revision, "p": patch, "m": mine["message"]},
                info.account,
            )
        except FormProblem as exc:
            if exc.code == "EDIT_CONFLICT":  # re-read: the page now shows their version; the form keeps mine
                context = await self._circuit_context(number, None)
                now = list(reversed(context["history"]))
                context["conflict"] = {
                    "base": base_revision,
                    "theirs": now[-1],
                    "changes": await text_work.off_loop(
                        self._offloop(), "CIRCUIT_TEXT", text_work.circuit_change, base, now[-1]
                    ),
                }
            context.update(mine=mine, editing=True, error=exc.message)
            response = render_page(request, "circuit.html", context, exc.status)
            response.headers.update(NO_STORE)
            return response
        return RedirectResponse(f"/circuits/{number}", status_code=303, headers=NO_STORE)


def _mine(fields: dict[str, list[str]], base: dict[str, Any]) -> dict[str, Any]:
    """What the edit form says, keyed by edge (the form names edges by their place in the base revision)."""
    notes: dict[tuple[str, str], str] = {}
    remove: set[tuple[str, str]] = set()
    for i, e in enumerate(base["edges"]):
        pair = (e["source"], e["target"])
        if f"note{i}" in fields and _text(_one(fields, f"note{i}")) != e["note"]:  # only the notes changed
            notes[pair] = _text(_one(fields, f"note{i}"))
        if _one(fields, f"remove{i}"):
            remove.add(pair)
    return {
        "name": _one(fields, "name"),
        "description": _text(_one(fields, "description")),
        "message": _one(fields, "message")[:500],
        "notes": notes,
        "remove": remove,
    }
