"""A small client for notebooks: the GraphQL API as Python calls (httpx; pandas optional).

    from kb.client import Client
    kb = Client("http://127.0.0.1:8000")               # token="ckb_..." for writes
    n = kb.neuron("InceptionV1 4c:447")                  # shows as a card in Jupyter
    n.inputs(10)                                         # DataFrame: key, layer, weight, magnitude, method
    kb.render(["InceptionV1 4c:447"], size=64, steps=64) # waits; the images show inline

Tables are pandas DataFrames when pandas is installed (``pip install 'circuit-kb[client]'``), lists of
dataclasses otherwise. Errors are ``KBError`` with the API's ``extensions.code``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

try:
    import pandas as pd
except ImportError:  # the `client` extra is not installed: lists of dataclasses
    pd = None


class KBError(Exception):
    """An error the API returned: ``code`` is its ``extensions.code`` (NOT_FOUND, BAD_KEY, FORBIDDEN...)."""

    def __init__(self, message: str, code: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.errors = errors or []


@dataclass
class Neighbor:
    key: str
    layer: str
    weight: float
    magnitude: float
    method: str


@dataclass
class Edge:
    source: str
    target: str
    weight: float
    magnitude: float
    method: str


@dataclass
class ClaimInfo:
    key: str
    label: str
    kind: str
    status: str
    revision: int
    author: str
    subjects: list[str] = field(default_factory=list)
    body: str = ""


def table(rows: Sequence[Neighbor | Edge | ClaimInfo]) -> Any:
    """A DataFrame of dataclass rows with pandas, the list itself without."""
    if pd is None:
        return rows
    return pd.DataFrame([asdict(r) for r in rows])


_NEURON = """query($key: String!, $model: String) { neuron(key: $key, model: $model) {
  key pinnedKey url index layer { key } model { key }
  visualizations { kind params artifact { url sha256 } } } }"""

# Field selections shared by several documents are GraphQL fragments, sent with the documents that spread them:
# each document is fixed text, and every value a call chooses travels as a variable.
_NEIGHBOR_FIELDS = """
fragment NeighborFields on NeighborConnection {
  edges { weight magnitude method node { key layer { key } } } }"""

_CLAIM_FIELDS = """
fragment ClaimFields on Claim { key label kind status revision body author { name } subjects { key } }"""

_JOB_FIELDS = """
fragment JobFields on RenderJob { id kind status progress error params neuron { key } artifact { url sha256 } }"""

# a neuron's inputs or outputs: the field is the document's choice (a variable names a value, never a field)
_NEIGHBORS = {
    which: f"""query($key: String!, $n: Int!, $sign: Sign!) {{ neuron(key: $key) {{
  {which}(first: $n, orderBy: WEIGHT, sign: $sign) {{ ...NeighborFields }} }} }}"""
    + _NEIGHBOR_FIELDS
    for which in ("inputs", "outputs")
}

_SUBGRAPH = """query($roots: [String!]!, $direction: Direction!, $depth: Int!, $perNode: Int!, $sign: Sign!) {
  subgraph(roots: $roots, direction: $direction, depth: $depth, perNode: $perNode, sign: $sign) {
    nodes { key } edges { source { key } target { key } weight magnitude method } } }"""

_CLAIMS = (
    """query($first: Int, $model: String, $layer: String, $kind: ClaimKind, $status: ClaimStatus) {
  claims(first: $first, model: $model, layer: $layer, kind: $kind, status: $status) {
    totalCount edges { node { ...ClaimFields } } } }"""
    + _CLAIM_FIELDS
)

_CLAIMS_ABOUT = "query($key: String!) { neuron(key: $key) { claims { ...ClaimFields } } }" + _CLAIM_FIELDS

_SEARCH = (
    """query($text: String!, $first: Int, $model: String, $layer: String, $kind: ClaimKind) {
  searchClaims(text: $text, first: $first, model: $model, layer: $layer, kind: $kind) {
    totalCount edges { node { ...ClaimFields } } } }"""
    + _CLAIM_FIELDS
)

_REQUEST = (
    """mutation($kind: RenderKind!, $neurons: [String!], $layer: String, $params: RenderParamsInput) {
  requestRender(kind: $kind, neurons: $neurons, layer: $layer, params: $params) { ...JobFields } }"""
    + _JOB_FIELDS
)

_JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { ...JobFields } }" + _JOB_FIELDS

_CREATE_CLAIM = "mutation($input: ClaimInput!) { createClaim(input: $input) { ...ClaimFields } }" + _CLAIM_FIELDS

_REVIEW = """mutation($key: String!, $verdict: Verdict!, $comment: String!) {
  reviewClaim(key: $key, verdict: $verdict, comment: $comment) { verdict comment revision reviewer { name } } }"""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _claim(node: dict[str, Any]) -> ClaimInfo:
    return ClaimInfo(
        key=node["key"],
        label=node["label"],
        kind=node["kind"],
        status=node["status"],
        revision=node["revision"],
        author=node["author"]["name"],
        subjects=[s["key"] for s in node["subjects"]],
        body=node["body"],
    )


@dataclass
class Render:
    """One render job; shows as its image in Jupyter once it is DONE."""

    id: int
    neuron: str
    kind: str
    status: str
    url: str | None = None
    sha256: str | None = None
    error: str | None = None
    progress: float = 0.0
    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, job: dict[str, Any], client: Client) -> Render:
        art = job.get("artifact") or {}
        return cls(
            id=job["id"],
            neuron=(job.get("neuron") or {}).get("key", ""),
            kind=job["kind"],
            status=job["status"],
            url=art.get("url"),
            sha256=art.get("sha256"),
            error=job.get("error"),
            progress=job.get("progress") or 0.0,
            _client=client,
        )

    def png(self) -> bytes | None:
        """The image's bytes, fetched from the server this client talks to."""
        if not self.sha256 or self._client is None:
            return None
        return self._client.artifact(self.sha256)

    def _repr_png_(self) -> bytes | None:
        return self.png()

    def _repr_html_(self) -> str:
        if self.url:
            caption = f"<figcaption>{html.escape(self.neuron)}</figcaption>"
            return f'<figure><img src="{html.escape(self.url)}">{caption}</figure>'
        return f"<p>{html.escape(self.neuron)}: {self.kind} {self.status} {html.escape(self.error or '')}</p>"


class Renders(list[Render]):
    """Render jobs in order; in Jupyter, their images side by side."""

    def _repr_html_(self) -> str:
        return "<div style='display:flex;flex-wrap:wrap;gap:8px'>" + "".join(r._repr_html_() for r in self) + "</div>"


class NeuronCard:
    """A neuron: its keys and links; ``inputs(n)`` / ``outputs(n)`` are its strongest connections."""

    def __init__(self, client: Client, data: dict[str, Any]):
        self._client = client
        self.key: str = data["key"]
        self.pinned_key: str = data["pinnedKey"]
        self.url: str = data["url"]
        self.index: int = data["index"]
        self.layer: str = data["layer"]["key"]
        self.model: str = data["model"]["key"]
        self.visualizations: list[dict[str, Any]] = data["visualizations"]

    def __repr__(self) -> str:
        return f"<Neuron {self.key} ({self.pinned_key}) {self.url}>"

    def _neighbors(self, which: Literal["inputs", "outputs"], n: int, sign: str) -> Any:
        data = self._client.query(_NEIGHBORS[which], {"key": self.key, "n": n, "sign": sign.upper()})
        edges = data["neuron"][which]["edges"]
        return table(
            [
                Neighbor(e["node"]["key"], e["node"]["layer"]["key"], e["weight"], e["magnitude"], e["method"])
                for e in edges
            ]
        )

    def inputs(self, n: int = 10, sign: str = "ANY") -> Any:
        """The top-n inputs by weight (sign: ANY, POSITIVE or NEGATIVE)."""
        return self._neighbors("inputs", n, sign)

    def outputs(self, n: int = 10, sign: str = "ANY") -> Any:
        """The top-n outputs by weight."""
        return self._neighbors("outputs", n, sign)

    def claims(self) -> Any:
        return self._client.claims_about(self.key)

    def render(self, kind: str = "FEATURE_VIS", wait: bool = True, **params: Any) -> Render:
        return self._client.render([self.key], kind=kind, wait=wait, **params)[0]

    def _repr_html_(self) -> str:
        images = "".join(
            f'<img src="{html.escape(v["artifact"]["url"])}" title="{html.escape(v["kind"])}" height="128">'
            for v in self.visualizations[:4]
        )
        return (
            f'<div><b><a href="{html.escape(self.url)}">{html.escape(self.key)}</a></b> '
            f"<code>{html.escape(self.pinned_key)}</code><div>{images}</div></div>"
        )


@dataclass
class Subgraph:
    nodes: list[str]
    edges: Any  # a DataFrame (source, target, weight, magnitude, method) or a list of Edge


class Client:
    """``Client(url, token=None)``: url is the server (``http://127.0.0.1:8000``) or its ``/graphql``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, http: httpx.Client | None = None):
        base = url.rstrip("/")
        self.base = base[: -len("/graphql")] if base.endswith("/graphql") else base
        self.token = token
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"<kb.client.Client {self.base}{' with a token' if self.token else ''}>"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any GraphQL query or mutation; returns ``data`` or raises KBError with the first error's code."""
        r = self.http.post(
            f"{self.base}/graphql", json={"query": query, "variables": variables or {}}, headers=self.headers
        )
        try:
            body = r.json()
        except ValueError:
            r.raise_for_status()
            raise KBError(f"HTTP {r.status_code}: not a GraphQL answer") from None
        if body.get("errors"):
            first = body["errors"][0]
            raise KBError(first.get("message", ""), (first.get("extensions") or {}).get("code"), body["errors"])
        r.raise_for_status()
        data: dict[str, Any] = body["data"]
        return data

    def artifact(self, sha256: str) -> bytes:
        r = self.http.get(f"{self.base}/artifacts/{sha256}.png")
        r.raise_for_status()
        return r.content

    # reads

    def neuron(self, key: str, model: str | None = None) -> NeuronCard:
        """A neuron by any key form ('InceptionV1 4c:447', inceptionv1/mixed4c:447, a pinned key...)."""
        return NeuronCard(self, self.query(_NEURON, {"key": key, "model": model})["neuron"])

    def subgraph(
        self,
        roots: list[str] | str,
        direction: str = "UPSTREAM",
        depth: int = 1,
        per_node: int = 5,
        sign: str = "ANY",
    ) -> Subgraph:
        """The candidate circuit around some units: per hop, each node's top per_node edges."""
        roots = [roots] if isinstance(roots, str) else list(roots)
        variables = {
            "roots": roots,
            "direction": direction.upper(),
            "depth": depth,
            "perNode": per_node,
            "sign": sign.upper(),
        }
        data = self.query(_SUBGRAPH, variables)["subgraph"]
        edges = [
            Edge(e["source"]["key"], e["target"]["key"], e["weight"], e["magnitude"], e["method"])
            for e in data["edges"]
        ]
        return Subgraph([n["key"] for n in data["nodes"]], table(edges))

    def claims(
        self,
        model: str | None = None,
        layer: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        first: int = 50,
    ) -> Any:
        """Claims, oldest first, filtered by model, layer, kind and status."""
        variables = {"first": first, "model": model, "layer": layer, "kind": kind, "status": status}
        edges = self.query(_CLAIMS, variables)["claims"]["edges"]
        return table([_claim(e["node"]) for e in edges])

    def claims_about(self, key: str) -> Any:
        return table([_claim(c) for c in self.query(_CLAIMS_ABOUT, {"key": key})["neuron"]["claims"]])

    def search(
        self, text: str, model: str | None = None, layer: str | None = None, kind: str | None = None, first: int = 20
    ) -> Any:
        """Claims whose label or body match the text, best first."""
        variables = {"text": text, "first": first, "model": model, "layer": layer, "kind": kind}
        edges = self.query(_SEARCH, variables)["searchClaims"]["edges"]
        return table([_claim(e["node"]) for e in edges])

    # writes (a token with the editor role)

    def render(
        self,
        neurons: list[str] | str | None = None,
        kind: str = "FEATURE_VIS",
        layer: str | None = None,
        wait: bool = True,
        timeout: float = 600.0,
        poll_s: float = 1.0,
        **params: Any,
    ) -> Renders:
        """Request renders (params as the API's RenderParamsInput: size, steps, seed, negative, dataset,
        topK...); with wait, poll until every job is DONE, FAILED or CANCELLED (KBError after ``timeout`` seconds)."""
        neurons = [neurons] if isinstance(neurons, str) else neurons
        params = {_camel(k): v for k, v in params.items()}
        variables = {"kind": kind.upper(), "neurons": neurons, "layer": layer, "params": params or None}
        jobs = self.query(_REQUEST, variables)["requestRender"]
        deadline = time.monotonic() + timeout
        while wait and any(j["status"] not in ("DONE", "FAILED", "CANCELLED") for j in jobs):
            if time.monotonic() > deadline:
                raise KBError(f"renders not finished after {timeout:g}s (jobs {[j['id'] for j in jobs]})", "TIMEOUT")
            time.sleep(poll_s)
            jobs = self.query(_JOBS, {"ids": [j["id"] for j in jobs]})["renderJobs"]
        return Renders(Render.of(j, self) for j in jobs)

    def propose_claim(
        self,
        label: str,
        subjects: list[str] | str,
        kind: str = "FEATURE",
        body: str = "",
        evidence: list[dict[str, Any]] | None = None,
        confidence: float | None = None,
        circuit: str | None = None,
    ) -> ClaimInfo:
        """A new claim (status PROPOSED) about some neurons; evidence as the API's EvidenceInput dicts."""
        subjects = [subjects] if isinstance(subjects, str) else list(subjects)
        claim_input = {
            "label": label,
            "kind": kind.upper(),
            "body": body,
            "subjects": subjects,
            "evidence": evidence or [],
            "confidence": confidence,
            "circuit": circuit,
        }
        return _claim(self.query(_CREATE_CLAIM, {"input": claim_input})["createClaim"])

    def review(self, key: str, verdict: str, comment: str = "") -> dict[str, Any]:
        """Support or dispute a claim (verdict SUPPORT or DISPUTE); one review per reviewer, updatable."""
        data = self.query(_REVIEW, {"key": key, "verdict": verdict.upper(), "comment": comment})["reviewClaim"]
        return {
            "verdict": data["verdict"],
            "comment": data["comment"],
            "revision": data["revision"],
            "reviewer": data["reviewer"]["name"],
        }
