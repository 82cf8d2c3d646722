"""``GET /artifacts/<sha256>.png``: an image of the artifact store (kb.render.storage), whichever store it is.

Content-addressed, so the bytes behind a URL never change: immutable for a year, its ETag the sha256, and a
request that already holds them (If-None-Match) gets 304. An image larger than ``STREAM_ABOVE`` is streamed a
piece at a time; a smaller one is read at once. The store is read off the event loop.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from kb.render.storage import ArtifactMissing, ArtifactStore

NAME = re.compile(r"([0-9a-f]{64})\.png")
STREAM_ABOVE = 1 << 20
CACHE = "public, max-age=31536000, immutable"


class ArtifactRoute:
    def __init__(self, store: ArtifactStore):
        self.store = store

    async def handle(self, request: Request) -> Response:
        match = NAME.fullmatch(request.path_params["name"])
        if match is None:
            return _not_found()
        sha = match.group(1)
        size = await run_in_threadpool(self.store.size, sha, ".png")
        if size is None:
            return _not_found()
        etag = f'"{sha}"'
        headers = {"Cache-Control": CACHE, "ETag": etag}
        if etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        if size > STREAM_ABOVE:
            headers["Content-Length"] = str(size)
            return StreamingResponse(self.store.chunks(sha, ".png"), media_type="image/png", headers=headers)
        try:
            data = await run_in_threadpool(self.store.read, sha, ".png")
        except ArtifactMissing:  # deleted between the two reads
            return _not_found()
        return Response(data, media_type="image/png", headers=headers)


def _etags(header: str) -> set[str]:
    """The entity tags an If-None-Match header lists (``*`` included), weak ones as strong."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404)
