"""The unit cards' pictures on the pages, and the asking for the ones they lack as people browse.

A card shows the thumbnail preset's render (kb.render.thumbnails), else another feature visualization marked as
such, else a placeholder. A page that shows cards without the preset's picture (the layer grid, the neuron page's
own picture and its input and output cards, the front page's strips, /explore) asks for them in the view lane
(kb.render.view_lane) after its answer is sent: the asking never delays or fails the page (a failure is logged,
nothing of it is saved, and the next view asks again). The page follows a live stream of those units' renders
(``stream``), and static/live.js swaps each picture in when its render lands.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from kb.claims import activity
from kb.render import thumbnails
from kb.render.jobs import Unit
from kb.render.thumbnails import Picture
from kb.render.view_lane import ask_for_thumbnails
from kb.serving.graph_cache import GraphCache
from kb.settings import Settings
from kb.web.auth.current import signed_in
from kb.web.templating import local, read

log = logging.getLogger("kb.web.thumbnails")
R = TypeVar("R", bound=Response)
STREAM_KEYS = 80  # a stream names at most this many units; more: the models' renders


class CardPictures:
    """One per app: the preset of its settings, and the asking on behalf of its pages."""

    def __init__(self, engine: sa.Engine, settings: Settings, graphs: GraphCache) -> None:
        self.engine = engine
        self.settings = settings
        self.graphs = graphs
        self.preset = thumbnails.preset_params(settings)
        self.asking = settings.view_thumbnails

    def pick(self, renders: Iterable[Any]) -> Picture | None:
        """A card's picture among a unit's renders (GraphQL's ``visualizations``, or kb.app.pictures.Visualization:
        kind, params, artifact.url)."""
        shown = [
            {"kind": read(v, "kind"), "params": read(v, "params"), "url": local(read(read(v, "artifact"), "url"))}
            for v in renders
        ]
        return thumbnails.pick(shown, self.preset)

    def of(self, node: Any) -> Picture | None:
        """The picture of a unit's card (a GraphQL answer's node, or kb.app.neuron_page's Card)."""
        return self.pick(read(node, "visualizations") or ())

    async def since(self) -> int | None:
        """Where the page's stream starts: read before the page's data, so that a picture landing after that read
        reaches the page (replayed when the stream opens). None when pages ask for nothing."""
        if not self.asking:
            return None

        def read() -> int:
            with self.engine.connect() as conn:
                return activity.last_seq(conn)

        try:
            return await run_in_threadpool(read)
        except Exception:
            log.warning("could not read where the live stream starts", exc_info=True)
            return None

    def stream(self, keys: list[str], since: int | None, always: list[str] | None = None) -> str | None:
        """The /events URL that brings the renders of ``keys`` (units shown without the preset's picture), and
        of ``always`` (a neuron page's own unit, whose claims it follows too); None when there is nothing to follow."""
        keys = list(dict.fromkeys(keys))
        if not always and (not keys or not self.asking):
            return None
        params: list[tuple[str, str]] = [("neuron", k) for k in always or ()]
        if self.asking and keys:
            if len(keys) + len(params) <= STREAM_KEYS:
                params += [("neuron", k) for k in keys if k not in (always or ())]
            else:
                params += [("model", m) for m in dict.fromkeys(k.split("/", 1)[0] for k in keys)]
                if not always:
                    params.append(("kind", "render"))
        if since is not None:
            params.append(("since", str(since)))
        return "/events?" + urlencode(params)

    def ask_later(self, request: Request, response: R, keys: list[str]) -> R:
        """After ``response`` is sent, ask for the preset's render of ``keys`` (canonical neuron keys)."""
        keys = list(dict.fromkeys(keys))
        if not self.asking or not keys:
            return response
        me = signed_in(request)
        requester = me.account.id if me else None
        response.background = BackgroundTask(self.ask, keys, requester)
        return response

    def ask(self, keys: list[str], requester: int | None = None) -> None:
        try:
            units = self.units(keys)
            asked = ask_for_thumbnails(self.engine, self.settings, units, requester)
            if asked.queued:
                log.info("asked for %d thumbnails in the view lane", len(asked.queued))
        except Exception:  # the page is answered; nothing of this was saved: the next view asks again
            log.warning("asking for the thumbnails of %d units failed", len(keys), exc_info=True)

    def units(self, keys: list[str]) -> list[Unit]:
        out = []
        for key in keys:
            head, _, index = key.rpartition(":")
            model, _, layer = head.partition("/")
            row = self.graphs.model_row(model)
            if row is None or row.get("removed_at") is not None:
                continue
            out.append(Unit(model, row["sha256"], layer, int(index)))
        return out
