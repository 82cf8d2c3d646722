"""kb.claims' reads hand back typed, immutable rows (kb.claims.rows), on a real database: what each read selects
lands in the right field, an older circuit revision keeps the circuit's newest as ``current_revision``, and a
circuit diff reads the same from revision rows as from the pages' GraphQL answers."""

import dataclasses
import secrets

import pytest

from kb.claims import accounts, circuits, reviews
from kb.claims import claims as domain
from kb.claims.accounts import Account
from kb.claims.rows import CircuitRevisionRow, CircuitRow, ClaimRevisionRow, ClaimRow, ReviewRevisionRow, ReviewRow
from kb.db.catalog import load_catalog

A, B, C = "inceptionv1/mixed4b:373", "inceptionv1/mixed4c:447", "inceptionv1/mixed4b:237"


def _user(conn, role: str) -> Account:
    name = f"rows-{secrets.token_hex(3)}"
    return Account(accounts.create_user(conn, name, role, display_name=f"{role} {name}"), name, role)


def test_claim_review_and_user_rows(engine, inceptionv1):
    with engine.begin() as conn:
        author, reviewer = _user(conn, "editor"), _user(conn, "moderator")
        claim_id = domain.create_claim(conn, load_catalog(conn), author, label="wheels", kind="FEATURE", subjects=[B])
        reviews.review_claim(conn, reviewer, claim_id, "SUPPORT", "yes")
        domain.update_claim(conn, load_catalog(conn), author, claim_id, 1, {"body": "and more"}, "sharper")
        reviews.review_claim(conn, reviewer, claim_id, "DISPUTE", "no longer")

        row = domain.claims_by_id(conn, [claim_id, 10**9])[claim_id]
        assert isinstance(row, ClaimRow) and list(domain.claims_by_id(conn, [claim_id, 10**9])) == [claim_id]
        assert (row.label, row.body, row.revision, row.created_by, row.dispute_count) == (
            "wheels",
            "and more",
            2,
            author.id,
            1,
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            row.label = "changed"  # type: ignore[misc]
        about = domain.claims_about_neurons(conn, [("inceptionv1", "mixed4c", 447)])[("inceptionv1", "mixed4c", 447)]
        assert row in about and all(isinstance(r, ClaimRow) for r in about)

        revs = domain.revisions(conn, [claim_id])[claim_id]
        assert all(isinstance(r, ClaimRevisionRow) for r in revs)
        assert [(r.revision, r.author, r.message, r.subjects) for r in revs] == [
            (1, author.name, "", [B]),
            (2, author.name, "sharper", [B]),
        ]
        assert revs[1].author_display == f"editor {author.name}"
        assert [c["field"] for c in domain.diff(revs[0], revs[1])] == ["body"]

        mine = reviews.review(conn, claim_id, reviewer.id)
        assert isinstance(mine, ReviewRow) and reviews.reviews_of_claims(conn, [claim_id])[claim_id] == [mine]
        assert (mine.verdict, mine.revision, mine.claim_revision) == ("DISPUTE", 2, 2)
        history = reviews.review_histories(conn, [(claim_id, reviewer.id)])[(claim_id, reviewer.id)]
        assert all(isinstance(h, ReviewRevisionRow) for h in history)
        assert [(h.verdict, h.claim_revision) for h in history] == [("SUPPORT", 1), ("DISPUTE", 2)]

        people = accounts.people_by_id(conn, [author.id])
        assert (people[author.id].name, people[author.id].role) == (author.name, "editor")


def test_circuit_rows_at_a_revision(engine, inceptionv1):
    with engine.begin() as conn:
        catalog, actor = load_catalog(conn), _user(conn, "editor")
        cid = circuits.create_circuit(conn, catalog, actor, "car", [], [{"source": A, "target": B, "note": "wheels"}])
        edge = {"source": C, "target": B, "note": "windows"}
        circuits.update_circuit(conn, catalog, actor, cid, 1, {"name": "car 2", "edges": [edge]}, "more")

        now = circuits.get(conn, cid)
        assert isinstance(now, CircuitRow) and (now.name, now.revision, now.current_revision) == ("car 2", 2, 2)
        old = circuits.at_revision(conn, cid, 1)
        assert (old.name, old.revision, old.current_revision, len(old.edges)) == ("car", 1, 2, 1)
        assert circuits.circuits_at(conn, [(cid, 1), (cid, None)]) == {(cid, 1): old, (cid, None): now}
        listed, total = circuits.listing(conn, "inceptionv1", C, 0, 1000)  # other tests' circuits may have C too
        assert now in listed and all(isinstance(r, CircuitRow) for r in listed) and total == len(listed)

        bare = circuits.revisions(conn, [cid], with_edges=False)[cid]
        assert all(isinstance(r, CircuitRevisionRow) and r.edges is None for r in bare)
        assert [(r.revision, r.author, r.message, r.edge_count) for r in bare] == [
            (1, actor.name, "", 1),
            (2, actor.name, "more", 2),
        ]
        full = circuits.with_edge_lists(conn, bare)
        assert full == circuits.revisions(conn, [cid])[cid] and full[1].edges == now.edges
        with pytest.raises(ValueError):
            circuits.diff(bare[0], bare[1])

    d = circuits.diff(full[0], full[1])
    assert [f["field"] for f in d["fields"]] == ["name"] and d["added_edges"] == [edge]
    answers = [
        {"revision": r.revision, "name": r.name, "description": "", "neurons": r.neurons, "edges": r.edges}
        for r in full
    ]
    assert circuits.diff(answers[0], answers[1]) == d  # the pages' GraphQL answers read the same
