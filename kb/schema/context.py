"""The typed per-request context: the shared graph cache, per-request DataLoaders, the request itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import strawberry
from strawberry.dataloader import DataLoader

from kb.claims import accounts, circuits, claims, model_counts, reviews, sessions
from kb.claims.rows import CircuitRow, ClaimRevisionRow, ClaimRow, ReviewRevisionRow, ReviewRow, UserRow
from kb.db import catalog
from kb.schema.deadline import check
from kb.schema.errors import CodedError
from kb.schema.limits import AnswerSize
from kb.serving.graph_cache import GraphCache
from kb.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

T = TypeVar("T")


class Loaders:
    """Per-request DataLoaders: what a request reads from SQL is batched, one statement per batch.

    Graph topology and weights come from the in-memory graph cache (one bulk read per model version, ever),
    so neighbors, subgraphs and paths issue no SQL at all once a model is loaded.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.layer_details = DataLoader(load_fn=self._layer_details)
        self.claim = DataLoader(load_fn=self._claims)
        self.claims_of_neuron = DataLoader(load_fn=self._claims_of_neurons)
        self.revisions = DataLoader(load_fn=self._revisions)
        self.reviews = DataLoader(load_fn=self._reviews)
        self.user = DataLoader(load_fn=self._users)
        self.visualizations = DataLoader(load_fn=self._visualizations)
        self.circuit = DataLoader(load_fn=self._circuits)
        self.circuit_at = DataLoader(load_fn=self._circuits_at)
        self.review_history = DataLoader(load_fn=self._review_histories)
        self.artifact = DataLoader(load_fn=self._artifacts)
        # the front page's model cards: one statement each for all the models of the request
        self.rendered_units = DataLoader(load_fn=self._rendered_units)
        self.showcase = DataLoader(load_fn=self._showcases)
        self.claim_count = DataLoader(load_fn=self._claim_counts)
        self.circuit_count = DataLoader(load_fn=self._circuit_counts)

    def _read(self, read: Callable[[sa.Connection], T]) -> T:
        """One batch through a data-access function, on a connection of its own (after the deadline check)."""
        check()
        with self.engine.connect() as conn:
            return read(conn)

    async def _layer_details(self, ids: list[int]) -> list[dict[str, Any]]:
        found = self._read(lambda conn: catalog.layers_by_id(conn, ids))
        return [found[i] for i in ids]

    async def _claims(self, ids: list[int]) -> list[ClaimRow | None]:
        found = self._read(lambda conn: claims.claims_by_id(conn, ids))
        return [found.get(i) for i in ids]

    async def _claims_of_neurons(self, keys: list[tuple[str, str, int]]) -> list[list[ClaimRow]]:
        found = self._read(lambda conn: claims.claims_about_neurons(conn, keys))
        return [found[k] for k in keys]

    async def _revisions(self, ids: list[int]) -> list[list[ClaimRevisionRow]]:
        found = self._read(lambda conn: claims.revisions(conn, ids))
        return [found[i] for i in ids]

    async def _reviews(self, ids: list[int]) -> list[list[ReviewRow]]:
        found = self._read(lambda conn: reviews.reviews_of_claims(conn, ids))
        return [found[i] for i in ids]

    async def _users(self, ids: list[int]) -> list[UserRow | None]:
        found = self._read(lambda conn: accounts.people_by_id(conn, ids))
        return [found.get(i) for i in ids]

    async def _circuits(self, ids: list[int]) -> list[CircuitRow | None]:
        found = self._read(lambda conn: circuits.circuits_by_id(conn, ids))
        return [found.get(i) for i in ids]

    async def _circuits_at(self, pins: list[tuple[int, int | None]]) -> list[CircuitRow | None]:
        """Circuits at pinned revisions (id, revision), as claims pin them."""
        found = self._read(lambda conn: circuits.circuits_at(conn, pins))
        return [found.get(p) for p in pins]

    async def _review_histories(self, keys: list[tuple[int, int]]) -> list[list[ReviewRevisionRow]]:
        """Every revision of the reviews (claim id, user id), oldest first."""
        found = self._read(lambda conn: reviews.review_histories(conn, keys))
        return [found[k] for k in keys]

    async def _visualizations(self, units: list[tuple[str, str, int]]) -> list[list[dict[str, Any]]]:
        from kb.render import jobs

        with self.engine.connect() as conn:
            found = jobs.done_for_units(conn, units)
        return [found[u] for u in units]

    async def _artifacts(self, ids: list[int]) -> list[dict[str, Any] | None]:
        from kb.render import jobs

        with self.engine.connect() as conn:
            found = jobs.artifacts(conn, ids)
        return [found.get(i) for i in ids]

    async def _rendered_units(self, shas: list[str]) -> list[int]:
        from kb.render import model_renders

        found = self._read(lambda conn: model_renders.rendered_units(conn, shas))
        return [found[s] for s in shas]

    async def _showcases(self, keys: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
        """(model sha256, how many) → up to that many rendered units (layer key, unit), for all in one read."""
        from kb.render import model_renders

        most = max(n for _, n in keys)
        found = self._read(lambda conn: model_renders.showcase(conn, {s for s, _ in keys}, most))
        return [found[s][:n] for s, n in keys]

    async def _claim_counts(self, model_keys: list[str]) -> list[int]:
        found = self._read(lambda conn: model_counts.claims_by_model(conn, model_keys))
        return [found[k] for k in model_keys]

    async def _circuit_counts(self, model_keys: list[str]) -> list[int]:
        found = self._read(lambda conn: model_counts.circuits_by_model(conn, model_keys))
        return [found[k] for k in model_keys]


@dataclass
class Context:
    engine: sa.Engine  # the database: claims, accounts, renders (what is not the graph)
    graphs: GraphCache  # the models' graphs, read from memory
    settings: Settings
    request: Any = None
    response: Any = None
    rates: Any = None  # kb.web.ratelimit.RateLimits: mutations per account
    offloop: Any = None  # kb.schema.offloop.OffLoop: where the schema executes this request (None: inline)
    loaders: Loaders = field(default=None)  # type: ignore[assignment]
    answer: AnswerSize = field(default=None)  # type: ignore[assignment]  # large lists counted at real size
    live: Any = None  # kb.web.live.routes.Live: the change follower subscriptions read (WebSocket requests)
    connection_params: Any = None  # a WebSocket's connection_init payload (strawberry sets it)
    subscriptions: int = 0  # subscriptions running on this WebSocket connection (its context is the connection's)
    _account: accounts.Account | None = None

    def __post_init__(self) -> None:
        if self.loaders is None:
            self.loaders = Loaders(self.engine)
        if self.answer is None:
            self.answer = AnswerSize(self.settings.answer_max_bytes)

    def account(self) -> accounts.Account:
        """The caller, from ``Authorization: Bearer ckb_…``, or else a sign-in session's cookie together with that
        session's CSRF token in ``X-CSRF-Token`` (UNAUTHENTICATED if absent, malformed, expired or revoked)."""
        if self._account is None:
            headers = self.request.headers if self.request is not None else {}
            scheme, _, token = headers.get("authorization", "").partition(" ")
            cookie = self.request.cookies.get(sessions.COOKIE) if self.request is not None else None
            if (scheme.lower() != "bearer" or not token.strip()) and not cookie:
                raise CodedError("this needs a token: send Authorization: Bearer <token>", "UNAUTHENTICATED")
            with self.engine.connect() as conn:
                if scheme.lower() == "bearer" and token.strip():
                    self._account = accounts.authenticate(conn, token.strip())
                else:
                    assert cookie, "refused above: neither a bearer token nor a session cookie"
                    self._account = sessions.cookie_account(conn, cookie, headers.get(sessions.CSRF_HEADER))
        return self._account

    def rate_limit(self, account: accounts.Account, cost: int = 1) -> None:
        """Count a mutation (``cost`` of them: a requestRender charges for its units beyond the first ones)
        against the account's rate limit; RATE_LIMITED past it."""
        if self.rates is None or cost < 1:
            return
        wait = self.rates.mutation(account.id, cost)
        if wait:
            raise CodedError(
                f"too many changes from {account.name}: retry in {wait:.1f} s",
                "RATE_LIMITED",
                retryAfter=round(wait, 1),
            )


Info = strawberry.Info[Context, None]
