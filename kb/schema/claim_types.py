"""GraphQL types of the claim layer: claims and their revisions, evidence, reviews, circuits, citations."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from kb.claims import circuits as circuit_domain
from kb.claims import content, edge_lists
from kb.claims.claims import diff as diff_fields
from kb.claims.reviews import content_authors, last_content_revision
from kb.graph.keys import KeyProblem
from kb.schema import deadline
from kb.schema.context import Info
from kb.schema.errors import CodedError, bad_input
from kb.schema.pagination import PageInfo
from kb.schema.types import KeyedNode, Neuron

if TYPE_CHECKING:
    import sqlalchemy as sa

    from kb.schema.circuit_types import CircuitDiff, CircuitRevision
    from kb.schema.experiment_types import Experiment

ClaimKind = strawberry.enum(Enum("ClaimKind", {k: k for k in content.KINDS}), description="What a claim asserts.")
ClaimStatus = strawberry.enum(Enum("ClaimStatus", {k: k for k in content.STATUSES}))
EvidenceKind = strawberry.enum(
    Enum("EvidenceKind", {k: k for k in content.EVIDENCE_KINDS}),
    description="The seven lines of evidence of the Circuits thread, citations, and EXPERIMENT: a circuit "
    "checked by experiment here (experiment:N)",
)
Verdict = strawberry.enum(Enum("Verdict", {"SUPPORT": "SUPPORT", "DISPUTE": "DISPUTE"}))


def as_utc(v: datetime) -> datetime:
    """A database timestamp as an aware UTC datetime (SQLite returns naive ones)."""
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def bib_key(text: str) -> str:
    """A BibTeX entry key: the text with every non-alphanumeric character as '_'."""
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


# every character TeX gives a meaning: escaped, \ ^ ~ by name (``\input^^7b...`` must not reach a LaTeX build)
_TEX = {
    **{ch: "\\" + ch for ch in "{}&%$#_"},
    "\\": "\\textbackslash{}",
    "^": "\\textasciicircum{}",
    "~": "\\textasciitilde{}",
}


def bib_escape(text: str) -> str:
    """Text with every TeX special character escaped: {}&%$#_ with a backslash, \\ ^ ~ as their names."""
    return "".join(_TEX.get(ch, ch) for ch in text)


@strawberry.type(description="How to cite something: a stable key, a URL, a BibTeX entry, a line of text.")
class Citation:
    key: str
    url: str
    bibtex: str
    text: str


def neuron_citation(info: Info, neuron: Neuron) -> Citation:
    g = neuron._graph
    key = neuron._key
    pinned = key.pinned(g.sha256)
    base = info.context.settings.public_url.rstrip("/")
    url = f"{base}/n/{g.key}@{g.sha256[:12]}/{key.layer}/{key.index}"
    row = info.context.graphs.model_row(g.key) or {}
    year = as_utc(row.get("imported_at") or datetime.now(UTC)).year
    bibtex = (
        f"@misc{{{bib_key(pinned)},\n  title = {{Neuron {bib_escape(str(key))}}},\n"
        f"  howpublished = {{Circuit KB, \\url{{{url}}}}},\n"
        f"  note = {{Pinned key {bib_escape(pinned)}; model {bib_escape(g.key)} "
        f"({bib_escape(row.get('source', ''))}), weights sha256 {g.sha256}}},\n  year = {{{year}}}\n}}"
    )
    text = f"{key} (pinned {pinned}), Circuit KB, {url}"
    return Citation(key=pinned, url=url, bibtex=bibtex, text=text)


@strawberry.type
class Person:
    name: str
    display_name: str


def _shown(p: Person) -> str:
    return p.display_name or p.name


async def _person(info: Info, user_id: int) -> Person:
    row = await info.context.loaders.user.load(user_id)
    return Person(name=row["name"], display_name=row["display_name"]) if row else Person(name="?", display_name="?")


@strawberry.type(description="A piece of evidence and what it points at.")
class Evidence:
    kind: EvidenceKind
    note: str
    neuron: str | None = strawberry.field(default=None, description="a neuron key")
    source: str | None = strawberry.field(default=None, description="an edge's source neuron key")
    target: str | None = strawberry.field(default=None, description="an edge's target neuron key")
    url: str | None = None
    doi: str | None = None
    visualization: str | None = None
    authors: list[str] | None = strawberry.field(default=None, description="a CITATION's authors")
    title: str | None = strawberry.field(default=None, description="a CITATION's title")
    experiment: str | None = strawberry.field(default=None, description="an EXPERIMENT's key: experiment:N")

    @classmethod
    def of(cls, item: dict) -> Evidence:
        return cls(
            kind=EvidenceKind[item["kind"]],
            note=item.get("note", ""),
            neuron=item.get("neuron"),
            source=item.get("source"),
            target=item.get("target"),
            url=item.get("url"),
            doi=item.get("doi"),
            visualization=item.get("visualization"),
            authors=item.get("authors"),
            title=item.get("title"),
            experiment=item.get("experiment"),
        )


@strawberry.type(description="One field that changed between two revisions.")
class FieldChange:
    field: str
    before: str | None = strawberry.field(description="the old value (lists and objects as JSON)")
    after: str | None
    patch: str | None = strawberry.field(description="a unified diff, for label and body (null when tooLarge)")
    too_large: bool = strawberry.field(
        default=False,
        description="the texts were too large to diff within the server's bound: patch is null, before and after "
        "hold both versions",
    )


@strawberry.type(description="An immutable revision of a claim: citable as claim:N@R.")
class ClaimRevision:
    revision: int
    created_at: datetime
    message: str
    label: str
    body: str
    kind: ClaimKind
    status: ClaimStatus
    confidence: float | None
    subjects: list[str] = strawberry.field(description="canonical neuron keys")
    _row: strawberry.Private[dict]

    @classmethod
    def of(cls, row: dict) -> ClaimRevision:
        return cls(
            revision=row["revision"],
            created_at=as_utc(row["created_at"]),
            message=row["message"],
            label=row["label"],
            body=row["body"],
            kind=ClaimKind[row["kind"]],
            status=ClaimStatus[row["status"]],
            confidence=row["confidence"],
            subjects=list(row["subjects"]),
            _row=row,
        )

    @strawberry.field
    def key(self) -> str:
        return f"claim:{self._row['claim_id']}@{self.revision}"

    @strawberry.field(
        description="The circuit this revision is about, as it was at the revision it pins (circuit:N@R): a later "
        "edit of the circuit does not change it (`latestRevision` says whether a newer one exists)."
    )
    async def circuit(self, info: Info) -> Circuit | None:
        return await pinned_circuit(info, self._row)

    @strawberry.field(description="circuit:N@R: the circuit revision this claim revision is about (null: none).")
    def circuit_key(self) -> str | None:
        return pin_key(self._row)

    @strawberry.field
    def evidence(self) -> list[Evidence]:
        return [Evidence.of(e) for e in self._row["evidence"]]

    @strawberry.field(description="What changed from the revision before this one (null for revision 1).")
    async def diff_from_previous(self, info: Info) -> list[FieldChange] | None:
        if self.revision == 1:
            return None
        revs = await info.context.loaders.revisions.load(self._row["claim_id"])
        return [FieldChange(**c) for c in diff_fields(revs[self.revision - 2], self._row, deadline.check)]

    @strawberry.field
    async def author(self, info: Info) -> Person:
        return await _person(info, self._row["author_id"])

    @strawberry.field(
        description="The content authors up to this revision, in order of first contribution "
        "(a change of status alone makes nobody an author)."
    )
    async def authors(self, info: Info) -> list[Person]:
        return [await _person(info, i) for i in await self._author_ids(info)]

    async def _author_ids(self, info: Info) -> list[int]:
        revs = await info.context.loaders.revisions.load(self._row["claim_id"])
        return content_authors(revs[: self.revision])

    async def _source(self, info: Info) -> dict | None:
        """For an imported claim (families from a paper): the CITATION it came from, if it names its authors."""
        claim = await info.context.loaders.claim.load(self._row["claim_id"])
        if not claim or not claim.get("origin"):
            return None
        return next((e for e in self._row["evidence"] if e.get("kind") == "CITATION" and e.get("authors")), None)

    @strawberry.field(
        description="How to cite exactly this revision: its content authors, or for an imported "
        "claim the source's authors and DOI, with the importing account as curator."
    )
    async def citation(self, info: Info) -> Citation:
        people = [_shown(await _person(info, i)) for i in await self._author_ids(info)]
        source = await self._source(info)
        key = self.key()
        url = f"{info.context.settings.public_url.rstrip('/')}/c/{self._row['claim_id']}/{self.revision}"
        day = f"{self.created_at:%Y-%m-%d}"
        if source:
            names = list(source["authors"])
            ref = source.get("title") or ""
            where = f"doi:{source['doi']}" if source.get("doi") else source.get("url", "")
            text = (
                f'{", ".join(names)}, "{self.label}"'
                + (f", in {ref}" if ref else "")
                + f" ({where}); curated by {', '.join(people)} in Circuit KB {key} ({day}), {url}"
            )
            extra = (f"  doi = {{{bib_escape(source['doi'])}}},\n" if source.get("doi") else "") + (
                f"  note = {{{bib_escape('In ' + ref + '; ' if ref else '')}curated by "
                f"{bib_escape(', '.join(people))} in Circuit KB}},\n"
            )
        else:
            names = people
            text = f'{", ".join(names)}, "{self.label}", Circuit KB {key} ({day}), {url}'
            extra = ""
        bibtex = (
            f"@misc{{{bib_key(key)},\n  title = {{{bib_escape(self.label)}}},\n"
            f"  author = {{{bib_escape(' and '.join(names))}}},\n"
            f"  howpublished = {{Circuit KB {bib_escape(key)}, \\url{{{url}}}}},\n"
            + extra
            + f"  year = {{{self.created_at.year}}}\n}}"
        )
        return Citation(key=key, url=url, bibtex=bibtex, text=text)


@strawberry.type
class ReviewRevision:
    revision: int
    verdict: Verdict
    comment: str
    created_at: datetime


@strawberry.type(description="A reviewer's current verdict on a claim; `history` keeps every change.")
class Review:
    verdict: Verdict
    comment: str
    revision: int
    created_at: datetime
    updated_at: datetime
    _row: strawberry.Private[dict]

    @classmethod
    def of(cls, row: dict) -> Review:
        return cls(
            verdict=Verdict[row["verdict"]],
            comment=row["comment"],
            revision=row["revision"],
            created_at=as_utc(row["created_at"]),
            updated_at=as_utc(row["updated_at"]),
            _row=row,
        )

    @strawberry.field(description="the claim revision this verdict judged (null: reviewed before this was kept)")
    def claim_revision(self) -> int | None:
        return self._row.get("claim_revision")

    @strawberry.field(description="the claim's content changed after this review: it judged an older revision")
    async def stale(self, info: Info) -> bool:
        revs = await info.context.loaders.revisions.load(self._row["claim_id"])
        return (self._row.get("claim_revision") or 0) < last_content_revision(revs)

    @strawberry.field
    async def reviewer(self, info: Info) -> Person:
        return await _person(info, self._row["user_id"])

    @strawberry.field
    async def history(self, info: Info) -> list[ReviewRevision]:
        rows = await info.context.loaders.review_history.load((self._row["claim_id"], self._row["user_id"]))
        return [
            ReviewRevision(
                revision=r["revision"],
                verdict=Verdict[r["verdict"]],
                comment=r["comment"],
                created_at=as_utc(r["created_at"]),
            )
            for r in rows
        ]


def pin_key(row: dict) -> str | None:
    """circuit:N@R of a claim (revision) row; circuit:N where the revision is not known (an imported claim)."""
    if not row.get("circuit_id"):
        return None
    revision = row.get("circuit_revision")
    return f"circuit:{row['circuit_id']}" + (f"@{revision}" if revision else "")


async def pinned_circuit(info: Info, row: dict) -> Circuit | None:
    """The circuit of a claim (revision) row at its pinned revision (the current one where none is pinned)."""
    if not row.get("circuit_id"):
        return None
    found = await info.context.loaders.circuit_at.load((row["circuit_id"], row.get("circuit_revision")))
    return Circuit.of(found) if found is not None else None


def _neurons(info: Info, keys: Iterable[str]) -> list[Neuron]:
    out = []
    for k in keys:
        try:
            key = info.context.graphs.resolve(k)
            out.append(Neuron.of_key(info.context.graphs.graph(key.model), key))
        except (KeyProblem, LookupError):
            continue  # a subject of a removed model: the claim keeps the key, the graph has no unit
    return out


@strawberry.type(description="A claim about neurons or a circuit, with its evidence, reviews and full history.")
class Claim(KeyedNode):
    key: str = strawberry.field(description="claim:N")
    label: str
    body: str = strawberry.field(description="markdown")
    kind: ClaimKind
    status: ClaimStatus
    confidence: float | None
    revision: int = strawberry.field(description="the current revision number")
    model: str
    created_at: datetime
    updated_at: datetime
    support_count: int
    dispute_count: int
    _row: strawberry.Private[dict]

    @classmethod
    def of(cls, row: dict) -> Claim:
        return cls(
            key=f"claim:{row['id']}",
            label=row["label"],
            body=row["body"],
            kind=ClaimKind[row["kind"]],
            status=ClaimStatus[row["status"]],
            confidence=row["confidence"],
            revision=row["revision"],
            model=row["model_key"],
            created_at=as_utc(row["created_at"]),
            updated_at=as_utc(row["updated_at"]),
            support_count=row["support_count"],
            dispute_count=row["dispute_count"],
            _row=row,
        )

    async def _current(self, info: Info) -> dict:
        revs = await info.context.loaders.revisions.load(self._row["id"])
        return revs[-1]

    @strawberry.field
    async def author(self, info: Info) -> Person:
        return await _person(info, self._row["created_by"])

    @strawberry.field(description="The content authors, in order of first contribution (`author` created it).")
    async def authors(self, info: Info) -> list[Person]:
        return await ClaimRevision.of(await self._current(info)).authors(info)

    @strawberry.field(description="The neurons the current revision is about.")
    async def subjects(self, info: Info) -> list[Neuron]:
        return _neurons(info, (await self._current(info))["subjects"])

    @strawberry.field
    async def evidence(self, info: Info) -> list[Evidence]:
        return [Evidence.of(e) for e in (await self._current(info))["evidence"]]

    @strawberry.field(description="The circuit the current revision is about, at the revision it pins.")
    async def circuit(self, info: Info) -> Circuit | None:
        return await pinned_circuit(info, self._row)

    @strawberry.field(description="Every revision, oldest first.")
    async def revisions(self, info: Info) -> list[ClaimRevision]:
        return [ClaimRevision.of(r) for r in await info.context.loaders.revisions.load(self._row["id"])]

    @strawberry.field(name="revisionAt", description="One revision (claim:N@R).")
    async def revision_at(self, info: Info, revision: int) -> ClaimRevision:
        revs = await info.context.loaders.revisions.load(self._row["id"])
        if not 1 <= revision <= len(revs):
            raise CodedError(f"{self.key} has revisions 1..{len(revs)}", "NOT_FOUND")
        return ClaimRevision.of(revs[revision - 1])

    @strawberry.field(description="What changed from one revision to another.")
    async def diff(
        self, info: Info, from_: Annotated[int, strawberry.argument(name="from")], to: int | None = None
    ) -> list[FieldChange]:
        revs = await info.context.loaders.revisions.load(self._row["id"])
        to = to or len(revs)
        if not (1 <= from_ <= len(revs) and 1 <= to <= len(revs)):
            raise bad_input(f"{self.key} has revisions 1..{len(revs)}")
        return [FieldChange(**c) for c in diff_fields(revs[from_ - 1], revs[to - 1], deadline.check)]

    @strawberry.field
    async def reviews(self, info: Info) -> list[Review]:
        return [Review.of(r) for r in await info.context.loaders.reviews.load(self._row["id"])]

    @strawberry.field(description="How to cite the current revision.")
    async def citation(self, info: Info) -> Citation:
        return await ClaimRevision.of(await self._current(info)).citation(info)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False):
        from kb.claims.claims import claims_by_id, parse_key

        rows = _rows_by_id(info, claims_by_id, [parse_key(nid) for nid in node_ids], required, "claim")
        return [cls.of(r) if r else None for r in rows]


def _rows_by_id(
    info: Info,
    by_id: Callable[[sa.Connection, list[int]], dict[int, dict]],
    ids: list[int],
    required: bool,
    kind: str,
) -> list[dict | None]:
    """Rows by id in the order asked, one statement for them all (None where absent; NOT_FOUND if required)."""
    found: dict[int, dict] = {}
    if ids:
        with info.context.graphs.engine.connect() as conn:
            found = by_id(conn, ids)
    missing = [i for i in ids if i not in found]
    if required and missing:
        raise CodedError(f"no {kind}:{missing[0]}", "NOT_FOUND")
    return [found.get(i) for i in ids]


@strawberry.type
class ClaimEdge:
    cursor: str
    node: Claim


@strawberry.type
class ClaimConnection:
    edges: list[ClaimEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class CircuitEdge:
    source: str
    target: str
    note: str


@strawberry.type(description="One stated edge checked against the weight graph.")
class EdgeCheck:
    source: str
    target: str
    note: str
    exists: bool
    weight: float | None
    magnitude: float | None
    sign: str = strawberry.field(description="POSITIVE, NEGATIVE, ZERO or ABSENT")
    rank: int | None = strawberry.field(description="1 = the target's strongest excitatory input")
    inputs: int | None = strawberry.field(description="how many inputs the target has")
    reason: str


@strawberry.type
class CircuitCheck:
    edges: list[EdgeCheck]

    @strawberry.field(description="every stated edge exists in the weight graph")
    def all_exist(self) -> bool:
        return all(e.exists for e in self.edges)

    @strawberry.field(description="every stated edge exists and is excitatory")
    def all_excitatory(self) -> bool:
        return all(e.sign == "POSITIVE" for e in self.edges)


@strawberry.type(description="A named subgraph that claims can be about: circuit:N.")
class Circuit(KeyedNode):
    key: str
    name: str
    description: str
    model: str
    revision: int = strawberry.field(description="the revision shown (the current one unless asked for circuit:N@R)")
    _row: strawberry.Private[dict]

    @classmethod
    def of(cls, row: dict) -> Circuit:
        return cls(
            key=f"circuit:{row['id']}",
            name=row["name"],
            description=row["description"],
            model=row["model_key"],
            revision=row.get("revision") or 1,
            _row=row,
        )

    @strawberry.field(description="The stated edges of the revision shown (counted at their size in the answer).")
    def edges(self, info: Info) -> list[CircuitEdge]:
        info.context.answer.charge(edge_lists.size(self._row["edges"]), f"{self.key}@{self.revision}'s edges")
        return [CircuitEdge(**e) for e in self._row["edges"]]

    @strawberry.field(description="circuit:N@R of the revision shown.")
    def revision_key(self) -> str:
        return f"{self.key}@{self.revision}"

    @strawberry.field(description="The circuit's newest revision: above `revision` when this shows an older one.")
    def latest_revision(self) -> int:
        return int(self._row.get("current_revision") or self.revision)

    @strawberry.field(description="Every revision, oldest first (each citable as circuit:N@R).")
    def revisions(self, info: Info) -> list[Annotated[CircuitRevision, strawberry.lazy("kb.schema.circuit_types")]]:
        from kb.schema.circuit_types import revisions_of

        return revisions_of(info, self._row["id"])

    @strawberry.field(name="revisionAt", description="One revision (circuit:N@R).")
    def revision_at(
        self, info: Info, revision: int
    ) -> Annotated[CircuitRevision, strawberry.lazy("kb.schema.circuit_types")]:
        from kb.schema.circuit_types import revision_of

        return revision_of(info, self._row["id"], revision)

    @strawberry.field(description="What changed from one revision to another (to: the current one if left out).")
    def diff(
        self, info: Info, from_: Annotated[int, strawberry.argument(name="from")], to: int | None = None
    ) -> Annotated[CircuitDiff, strawberry.lazy("kb.schema.circuit_types")]:
        from kb.schema.circuit_types import diff_of

        return diff_of(info, self._row["id"], from_, to)

    @strawberry.field
    def neurons(self, info: Info) -> list[Neuron]:
        return _neurons(info, self._row["neurons"])

    @strawberry.field(
        description="Its checks by experiment, of every revision: the revision shown's and newer first "
        "(olderRevision marks a check of an older one)."
    )
    def experiments(self, info: Info) -> list[Annotated[Experiment, strawberry.lazy("kb.schema.experiment_types")]]:
        from kb.schema.experiment_types import experiments_of

        return experiments_of(info, self._row["id"], self.latest_revision())

    @strawberry.field
    def created_at(self) -> datetime:
        return self._row["created_at"]

    @strawberry.field(description="The circuit's web page.")
    def url(self, info: Info) -> str:
        return f"{info.context.settings.public_url.rstrip('/')}/circuits/{self._row['id']}"

    @strawberry.field(description="Current claims about this circuit, oldest first.")
    def claims(self, info: Info) -> list[Claim]:
        with info.context.graphs.engine.connect() as conn:
            return [Claim.of(r) for r in circuit_domain.claims_about(conn, self._row["id"])]

    @strawberry.field(description="Each stated edge against the weights: exists, weight, sign, rank.")
    def check(self, info: Info) -> CircuitCheck:
        graph = info.context.graphs.graph(self.model)
        info.context.answer.charge(edge_lists.size(self._row["edges"]), f"{self.key}@{self.revision}'s check")
        return CircuitCheck(edges=[EdgeCheck(**vars(e)) for e in circuit_domain.check(graph, self._row)])

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False):
        from kb.claims.claims import parse_circuit_key

        ids = [parse_circuit_key(nid) for nid in node_ids]
        rows = _rows_by_id(info, circuit_domain.circuits_by_id, ids, required, "circuit")
        return [cls.of(r) if r else None for r in rows]


@strawberry.type
class CircuitEdgeOfConnection:
    cursor: str
    node: Circuit


@strawberry.type
class CircuitConnection:
    edges: list[CircuitEdgeOfConnection]
    page_info: PageInfo
    total_count: int
