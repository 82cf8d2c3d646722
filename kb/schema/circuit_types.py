"""GraphQL types of circuit revisions: each immutable and citable (circuit:N@R), and their diff (updateCircuit is
kb.schema.mutation's)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from kb.claims import circuits as circuit_domain
from kb.claims.rows import CircuitRevisionRow
from kb.schema import deadline
from kb.schema.claim_types import (
    CircuitEdge,
    Citation,
    FieldChange,
    Person,
    as_utc,
    bib_escape,
    bib_key,
)
from kb.schema.context import Info
from kb.schema.errors import CodedError, bad_input
from kb.schema.fields import field


@strawberry.type(description="An immutable revision of a circuit: citable as circuit:N@R.")
class CircuitRevision:
    key: str = strawberry.field(description="circuit:N@R")
    revision: int
    created_at: datetime
    message: str
    name: str
    description: str
    neurons: list[str] = strawberry.field(description="canonical neuron keys")
    edges: list[CircuitEdge]
    author: Person
    _row: strawberry.Private[CircuitRevisionRow]

    @classmethod
    def of(cls, row: CircuitRevisionRow) -> CircuitRevision:
        return cls(
            key=f"circuit:{row.circuit_id}@{row.revision}",
            revision=row.revision,
            created_at=as_utc(row.created_at),
            message=row.message,
            name=row.name,
            description=row.description,
            neurons=list(row.neurons),
            edges=[CircuitEdge(**e) for e in row.edges or ()],  # read only where asked for (and counted)
            author=Person(name=row.author, display_name=row.author_display),
            _row=row,
        )

    @field(description="How to cite exactly this revision.")
    def citation(self, info: Info) -> Citation:
        url = f"{info.context.settings.public_url.rstrip('/')}/circuits/{self._row.circuit_id}/{self.revision}"
        bibtex = (
            f"@misc{{{bib_key(self.key)},\n  title = {{{bib_escape(self.name)}}},\n"
            f"  author = {{{bib_escape(self.author.display_name)}}},\n"
            f"  howpublished = {{Circuit KB {bib_escape(self.key)}, \\url{{{url}}}}},\n"
            f"  year = {{{self.created_at.year}}}\n}}"
        )
        text = f'{self.author.display_name}, "{self.name}", Circuit KB {self.key} ({self.created_at:%Y-%m-%d}), {url}'
        return Citation(key=self.key, url=url, bibtex=bibtex, text=text)


@strawberry.type
class NoteChange:
    source: str
    target: str
    before: str
    after: str


@strawberry.type(description="What changed between two revisions of a circuit.")
class CircuitDiff:
    fields: list[FieldChange] = strawberry.field(description="name and description, with a unified diff")
    added_neurons: list[str]
    removed_neurons: list[str]
    added_edges: list[CircuitEdge]
    removed_edges: list[CircuitEdge]
    changed_notes: list[NoteChange]


def _revisions(info: Info, circuit_id: int) -> list[CircuitRevisionRow]:
    """Every revision of the circuit, without their edge lists (charged, then read, where wanted)."""
    with info.context.engine.connect() as conn:
        return circuit_domain.revisions(conn, [circuit_id], with_edges=False)[circuit_id]


def _asks_for(info: Info, name: str) -> bool:
    """Whether the field being resolved selects ``name`` (directly, or in a fragment) in any of its uses; True where
    the info cannot say (the compiled executor's): then the lists are read, and charged, as if asked for."""
    selected = getattr(info, "selected_fields", None)
    if selected is None:
        return True
    stack = list(selected)
    while stack:
        node = stack.pop()
        for sel in getattr(node, "selections", ()) or ():
            if getattr(sel, "name", None) == name and not hasattr(sel, "type_condition"):
                return True
            if not hasattr(sel, "alias"):  # a fragment (spread or inline): look inside it
                stack.append(sel)
    return False


def _charge(info: Info, revs: list[CircuitRevisionRow], what: str) -> None:
    """The revisions' edge lists at their stored sizes against the answer's bound, before any is read."""
    info.context.answer.charge(sum(r.edges_size for r in revs), what)


def revisions_of(info: Info, circuit_id: int) -> list[CircuitRevision]:
    """Every revision; their edge lists only when asked for, counted at their real sizes first (each list is
    stored once, but an answer carries it once per revision)."""
    with_edges = _asks_for(info, "edges")
    with info.context.engine.connect() as conn:
        revs = circuit_domain.revisions(conn, [circuit_id], with_edges=False)[circuit_id]
        if with_edges:
            _charge(info, revs, f"the edges of circuit:{circuit_id}'s {len(revs)} revisions")
            revs = circuit_domain.with_edge_lists(conn, revs)
    return [CircuitRevision.of(r) for r in revs]


def revision_of(info: Info, circuit_id: int, revision: int) -> CircuitRevision:
    revs = _revisions(info, circuit_id)
    if not 1 <= revision <= len(revs):
        raise CodedError(f"circuit:{circuit_id} has revisions 1..{len(revs)}", "NOT_FOUND")
    row = revs[revision - 1]
    _charge(info, [row], f"circuit:{circuit_id}@{revision}'s edges")
    with info.context.engine.connect() as conn:
        return CircuitRevision.of(circuit_domain.with_edge_lists(conn, [row])[0])


def diff_of(info: Info, circuit_id: int, from_: int, to: int | None) -> CircuitDiff:
    revs = _revisions(info, circuit_id)
    to = to or len(revs)
    if not (1 <= from_ <= len(revs) and 1 <= to <= len(revs)):
        raise bad_input(f"circuit:{circuit_id} has revisions 1..{len(revs)}")
    pair = [revs[from_ - 1], revs[to - 1]]
    _charge(info, pair, f"the diff of circuit:{circuit_id}@{from_} and @{to}")
    with info.context.engine.connect() as conn:
        pair = circuit_domain.with_edge_lists(conn, pair)
    d = circuit_domain.diff(pair[0], pair[1], deadline.check)
    return CircuitDiff(
        fields=[FieldChange(**f) for f in d["fields"]],
        added_neurons=d["added_neurons"],
        removed_neurons=d["removed_neurons"],
        added_edges=[CircuitEdge(**e) for e in d["added_edges"]],
        removed_edges=[CircuitEdge(**e) for e in d["removed_edges"]],
        changed_notes=[NoteChange(**c) for c in d["changed_notes"]],
    )
