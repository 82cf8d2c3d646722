"""The typed per-request context: the shared graph cache, per-request DataLoaders, the request itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import strawberry
from strawberry.dataloader import DataLoader

from kb.claims import accounts, sessions
from kb.db.claim_tables import (
    circuit_table,
    claim_revision_table,
    claim_subject_table,
    claim_table,
    review_revision_table,
    review_table,
    user_table,
)
from kb.db.graph_cache import GraphCache
from kb.db.tables import layer_table
from kb.schema.deadline import check
from kb.schema.errors import CodedError
from kb.settings import Settings


class Loaders:
    """Per-request DataLoaders: what a request reads from SQL is batched, one statement per batch.

    Graph topology and weights come from the in-memory graph cache (one bulk read per model version, ever),
    so neighbors, subgraphs and paths issue no SQL at all once a model is loaded.
    """

    def __init__(self, graphs: GraphCache):
        self.graphs = graphs
        self.layer_details = DataLoader(load_fn=self._layer_details)
        self.claim = DataLoader(load_fn=self._claims)
        self.claims_of_neuron = DataLoader(load_fn=self._claims_of_neurons)
        self.revisions = DataLoader(load_fn=self._revisions)
        self.reviews = DataLoader(load_fn=self._reviews)
        self.user = DataLoader(load_fn=self._users)
        self.visualizations = DataLoader(load_fn=self._visualizations)
        self.circuit = DataLoader(load_fn=self._circuits)
        self.review_history = DataLoader(load_fn=self._review_histories)
        self.artifact = DataLoader(load_fn=self._artifacts)

    def _rows(self, query) -> list[dict]:
        check()
        with self.graphs.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    async def _layer_details(self, ids: list[int]) -> list[dict]:
        t = layer_table
        rows = {r["id"]: r for r in self._rows(sa.select(t).where(t.c.id.in_(ids)))}
        return [rows[i] for i in ids]

    async def _claims(self, ids: list[int]) -> list[dict | None]:
        t = claim_table
        rows = {r["id"]: r for r in self._rows(sa.select(t).where(t.c.id.in_(ids)))}
        return [rows.get(i) for i in ids]

    async def _claims_of_neurons(self, keys: list[tuple[str, str, int]]) -> list[list[dict]]:
        c, s = claim_table, claim_subject_table
        wanted = sa.tuple_(s.c.model_key, s.c.layer_key, s.c.neuron_index).in_(keys)
        out: dict[tuple, list[dict]] = {k: [] for k in keys}
        for r in self._rows(
            sa.select(c, s.c.model_key.label("_m"), s.c.layer_key.label("_l"), s.c.neuron_index.label("_i"))
            .join(s, s.c.claim_id == c.c.id)
            .where(wanted)
            .order_by(c.c.id)
        ):
            out[(r.pop("_m"), r.pop("_l"), r.pop("_i"))].append(r)
        return [out[k] for k in keys]

    async def _revisions(self, ids: list[int]) -> list[list[dict]]:
        t = claim_revision_table
        out: dict[int, list[dict]] = {i: [] for i in ids}
        for r in self._rows(sa.select(t).where(t.c.claim_id.in_(ids)).order_by(t.c.claim_id, t.c.revision)):
            out[r["claim_id"]].append(r)
        return [out[i] for i in ids]

    async def _reviews(self, ids: list[int]) -> list[list[dict]]:
        t = review_table
        out: dict[int, list[dict]] = {i: [] for i in ids}
        for r in self._rows(sa.select(t).where(t.c.claim_id.in_(ids)).order_by(t.c.claim_id, t.c.user_id)):
            out[r["claim_id"]].append(r)
        return [out[i] for i in ids]

    async def _users(self, ids: list[int]) -> list[dict | None]:
        t = user_table
        rows = {
            r["id"]: r
            for r in self._rows(sa.select(t.c.id, t.c.name, t.c.display_name, t.c.role).where(t.c.id.in_(ids)))
        }
        return [rows.get(i) for i in ids]

    async def _circuits(self, ids: list[int]) -> list[dict | None]:
        t = circuit_table
        rows = {r["id"]: r for r in self._rows(sa.select(t).where(t.c.id.in_(ids)))}
        return [rows.get(i) for i in ids]

    async def _review_histories(self, keys: list[tuple[int, int]]) -> list[list[dict]]:
        """Every revision of the reviews (claim id, user id), oldest first."""
        t = review_revision_table
        out: dict[tuple, list[dict]] = {k: [] for k in keys}
        for r in self._rows(
            sa.select(t)
            .where(sa.tuple_(t.c.claim_id, t.c.user_id).in_(keys))
            .order_by(t.c.claim_id, t.c.user_id, t.c.revision)
        ):
            out[(r["claim_id"], r["user_id"])].append(r)
        return [out[k] for k in keys]

    async def _visualizations(self, units: list[tuple[str, str, int]]) -> list[list[dict]]:
        from kb.render import jobs

        with self.graphs.engine.connect() as conn:
            found = jobs.done_for_units(conn, units)
        return [found[u] for u in units]

    async def _artifacts(self, ids: list[int]) -> list[dict | None]:
        from kb.render import jobs

        with self.graphs.engine.connect() as conn:
            found = jobs.artifacts(conn, ids)
        return [found.get(i) for i in ids]


@dataclass
class Context:
    graphs: GraphCache
    settings: Settings
    request: Any = None
    response: Any = None
    rates: Any = None  # kb.web.ratelimit.RateLimits: mutations per account
    offloop: Any = None  # kb.schema.offloop.OffLoop: where the schema executes this request (None: inline)
    loaders: Loaders = field(default=None)  # type: ignore[assignment]
    _account: accounts.Account | None = None

    def __post_init__(self):
        if self.loaders is None:
            self.loaders = Loaders(self.graphs)

    def account(self) -> accounts.Account:
        """The caller, from ``Authorization: Bearer ckb_…``, or else a sign-in session's cookie together with that
        session's CSRF token in ``X-CSRF-Token`` (UNAUTHENTICATED if absent, malformed, expired or revoked)."""
        if self._account is None:
            headers = self.request.headers if self.request is not None else {}
            scheme, _, token = headers.get("authorization", "").partition(" ")
            cookie = self.request.cookies.get(sessions.COOKIE) if self.request is not None else None
            if (scheme.lower() != "bearer" or not token.strip()) and not cookie:
                raise CodedError("this needs a token: send Authorization: Bearer <token>", "UNAUTHENTICATED")
            with self.graphs.engine.connect() as conn:
                if scheme.lower() == "bearer" and token.strip():
                    self._account = accounts.authenticate(conn, token.strip())
                else:
                    self._account = sessions.cookie_account(conn, cookie, headers.get(sessions.CSRF_HEADER))
        return self._account

    def rate_limit(self, account: accounts.Account) -> None:
        if self.rates is None:
            return
        wait = self.rates.mutation(account.id)
        if wait:
            raise CodedError(
                f"too many changes from {account.name}: retry in {wait:.1f} s",
                "RATE_LIMITED",
                retryAfter=round(wait, 1),
            )


Info = strawberry.Info[Context, None]
