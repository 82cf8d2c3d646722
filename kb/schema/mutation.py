"""Mutations: each declares the least role it needs; ownership and status rules are the domain's.

Each mutation field is its own transaction and returns a nullable type: in a request with several, those that
committed keep their data and one that fails is null with a coded error at its path (never ``data: null``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import strawberry

from kb.app import claims as claims_app
from kb.schema.auth import mutation
from kb.schema.claim_types import ClaimKind, ClaimStatus, EvidenceKind, Review, Verdict
from kb.schema.context import Info
from kb.schema.types import Circuit, Claim

if TYPE_CHECKING:
    import sqlalchemy as sa


@strawberry.input(description="One piece of evidence: its kind and what it points at.")
class EvidenceInput:
    kind: EvidenceKind
    note: str = ""
    neuron: str | None = None
    source: str | None = None
    target: str | None = None
    url: str | None = None
    doi: str | None = None
    visualization: str | None = None
    authors: list[str] | None = strawberry.field(default=None, description="a CITATION's authors")
    title: str | None = strawberry.field(default=None, description="a CITATION's title")
    experiment: str | None = strawberry.field(default=None, description="an EXPERIMENT's key: experiment:N")

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "authors": self.authors,
            "title": self.title,
            "kind": self.kind.value,
            "note": self.note,
            "neuron": self.neuron,
            "source": self.source,
            "target": self.target,
            "url": self.url,
            "doi": self.doi,
            "visualization": self.visualization,
        }


@strawberry.input
class ClaimInput:
    label: str
    kind: ClaimKind
    body: str = ""
    subjects: list[str] = strawberry.field(default_factory=list, description="neuron keys, any form")
    circuit: str | None = strawberry.field(
        default=None,
        description="circuit:N (pins its current revision) or circuit:N@R (that revision): the claim is about the "
        "circuit as it is at that revision, whatever later edits of the circuit change",
    )
    confidence: float | None = None
    evidence: list[EvidenceInput] = strawberry.field(default_factory=list)
    message: str = ""


@strawberry.input(description="The fields to change; those left out stay as they are.")
class ClaimPatch:
    label: str | None = strawberry.UNSET
    body: str | None = strawberry.UNSET
    kind: ClaimKind | None = strawberry.UNSET
    confidence: float | None = strawberry.UNSET
    subjects: list[str] | None = strawberry.UNSET
    circuit: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="circuit:N moves the claim to the circuit's current revision, circuit:N@R to that one "
        "(a content edit: a judged claim is PROPOSED again)",
    )
    evidence: list[EvidenceInput] | None = strawberry.UNSET

    def as_dict(self) -> dict[str, Any]:
        out = {}
        for name in ("label", "body", "kind", "confidence", "subjects", "circuit", "evidence"):
            value = getattr(self, name)
            if value is strawberry.UNSET:
                continue
            if name == "kind" and value is not None:
                value = value.value
            if name == "evidence" and value is not None:
                value = [e.as_dict() for e in value]
            out[name] = value
        return out


@strawberry.input
class CircuitEdgeInput:
    source: str
    target: str
    note: str = ""


@strawberry.input
class CircuitInput:
    name: str
    description: str = ""
    neurons: list[str] = strawberry.field(default_factory=list)
    edges: list[CircuitEdgeInput] = strawberry.field(default_factory=list)


def _engine(info: Info) -> sa.Engine:
    return info.context.engine


@strawberry.type
class ClaimMutation:
    @mutation(role="editor", description="Make a claim about neurons or a circuit (revision 1, PROPOSED).")
    def create_claim(self, info: Info, input: ClaimInput) -> Claim | None:
        draft = claims_app.ClaimDraft(
            label=input.label,
            kind=input.kind.value,
            body=input.body,
            confidence=input.confidence,
            subjects=input.subjects,
            circuit=input.circuit,
            evidence=[e.as_dict() for e in input.evidence],
            message=input.message,
        )
        row = claims_app.create_claim(_engine(info), info.context.graphs.catalog(), info.context.account(), draft)
        return Claim.of(row)

    @mutation(
        role="editor",
        description="Edit a claim's content (its author, or a moderator). Refused with "
        "EDIT_CONFLICT (and the current revision) unless expectedRevision is "
        "still the current one when the edit commits.",
    )
    def update_claim(
        self, info: Info, key: str, expected_revision: int, patch: ClaimPatch, message: str = ""
    ) -> Claim | None:
        edit = claims_app.Edit(key, expected_revision, patch.as_dict(), message)
        row = claims_app.update_claim(_engine(info), info.context.graphs.catalog(), info.context.account(), edit)
        return Claim.of(row)

    @mutation(role="editor", description="Change a claim's status: a moderator any; its author may retract.")
    def set_claim_status(
        self, info: Info, key: str, expected_revision: int, status: ClaimStatus, message: str = ""
    ) -> Claim | None:
        account = info.context.account()
        return Claim.of(
            claims_app.set_claim_status(_engine(info), account, key, expected_revision, status.value, message)
        )

    @mutation(role="editor", description="Support or dispute a claim; one review per user, changeable.")
    def review_claim(self, info: Info, key: str, verdict: Verdict, comment: str = "") -> Review | None:
        return Review.of(claims_app.review_claim(_engine(info), info.context.account(), key, verdict.value, comment))

    @mutation(role="editor", description="Name a circuit: neurons and the edges between them, a note per edge.")
    def create_circuit(self, info: Info, input: CircuitInput) -> Circuit | None:
        row = claims_app.create_circuit(
            _engine(info),
            info.context.graphs.catalog(),
            info.context.account(),
            input.name,
            input.neurons,
            [{"source": e.source, "target": e.target, "note": e.note} for e in input.edges],
            input.description,
        )
        return Circuit.of(row)


@strawberry.input
class EdgeInput:
    source: str
    target: str
    note: str = ""


@strawberry.input
class EdgeRef:
    source: str
    target: str


@strawberry.input(description="What to change; what is left out stays as it is.")
class CircuitPatch:
    name: str | None = None
    description: str | None = None
    add_neurons: list[str] = strawberry.field(default_factory=list)
    remove_neurons: list[str] = strawberry.field(default_factory=list, description="their edges are removed too")
    edges: list[EdgeInput] = strawberry.field(
        default_factory=list, description="edges to add; an existing source → target pair gets the new note"
    )
    remove_edges: list[EdgeRef] = strawberry.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "addNeurons": self.add_neurons,
            "removeNeurons": self.remove_neurons,
            "edges": [{"source": e.source, "target": e.target, "note": e.note} for e in self.edges],
            "removeEdges": [{"source": e.source, "target": e.target} for e in self.remove_edges],
        }


@strawberry.type
class CircuitMutation:
    @mutation(
        role="editor",
        description="Edit a circuit (any editor: circuits are edited together, every revision kept). Refused with "
        "EDIT_CONFLICT (and the current revision) unless expectedRevision is still current when the edit commits.",
    )
    def update_circuit(
        self, info: Info, key: str, expected_revision: int, patch: CircuitPatch, message: str = ""
    ) -> Circuit | None:
        edit = claims_app.Edit(key, expected_revision, patch.as_dict(), message)
        row = claims_app.update_circuit(_engine(info), info.context.graphs.catalog(), info.context.account(), edit)
        return Circuit.of(row)
