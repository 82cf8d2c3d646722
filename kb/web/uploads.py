"""``POST /uploads``: an editor uploads an image (a caricature's target); the answer names it by its sha256.

The body is the image's bytes (any ``Content-Type``: it is not believed; kb.render.uploads decides what the bytes
are, re-encodes them as PNG and stores them once). The caller is authenticated as GraphQL's are: ``Authorization:
Bearer ckb_…``, or the session cookie with the session's CSRF token in ``X-CSRF-Token``; an editor or above
(a viewer: FORBIDDEN), and each upload counts once against the account's mutation rate limit. The answer is JSON:
``{"upload": {"sha256", "url", "width", "height", "bytes", "new"}}`` (201 when stored now, 200 when it was there),
or ``{"errors": [{"message", "extensions": {"code"}}]}`` with the code's HTTP status, as /graphql answers. Then
``requestLayerRender(kind: CARICATURE, layer: L, params: {upload: SHA256})`` renders its caricature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from graphql import GraphQLError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from kb.claims.accounts import Account
from kb.errors import Problem
from kb.render.storage import storage_from_settings
from kb.render.uploads import Upload, store_upload
from kb.settings import Settings

if TYPE_CHECKING:
    from kb.schema.context import Context

PATH = "/uploads"
STATUS = {
    "BAD_INPUT": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
}
NO_STORE = {"Cache-Control": "no-store"}


class UploadRefused(Problem):
    code = "FORBIDDEN"


def body_limit(settings: Settings) -> int:
    """The largest request body the upload routes take: the image and a form's few fields around it."""
    return settings.upload_max_bytes + 64 * 1024


async def upload_as(account: Account, engine: sa.Engine, settings: Settings, data: bytes) -> Upload:
    """The upload of an editor (or above): the one path of the route, the layer page's form (and, without an
    account, `kb render --image-file`) into kb.render.uploads."""
    if not account.at_least("editor"):
        raise UploadRefused(f"uploading images needs an editor; {account.name} is {account.role}")
    return await run_in_threadpool(
        store_upload, engine, storage_from_settings(settings, engine), settings, data, account.id
    )


def as_json(up: Upload, base: str) -> dict[str, Any]:
    return {
        "sha256": up.sha256,
        "url": f"{base.rstrip('/')}{up.path}",
        "width": up.width,
        "height": up.height,
        "bytes": up.bytes,
        "new": up.new,
    }


def error(message: str, code: str, **extensions: Any) -> JSONResponse:
    body = {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}
    return JSONResponse(body, status_code=STATUS.get(code, 400), headers=NO_STORE)


class UploadRoute:
    def __init__(
        self, engine: sa.Engine, settings: Settings, context_for_request: Callable[[Request], Context]
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.context_for_request = context_for_request  # request -> kb.schema.context.Context (its caller)

    async def handle(self, request: Request) -> JSONResponse:
        ctx = self.context_for_request(request)
        try:
            account = await run_in_threadpool(ctx.account)
            ctx.rate_limit(account)
            data = await request.body()
            up = await upload_as(account, self.engine, self.settings, data)
        except GraphQLError as exc:  # a CodedError: UNAUTHENTICATED, RATE_LIMITED
            ext = dict(exc.extensions or {})
            return error(exc.message, ext.pop("code", "BAD_INPUT"), **ext)
        except Problem as exc:
            return error(exc.message, exc.code, **exc.extensions)
        return JSONResponse(
            {"upload": as_json(up, self.settings.public_url)}, status_code=201 if up.new else 200, headers=NO_STORE
        )
