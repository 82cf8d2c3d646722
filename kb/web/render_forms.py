"""The pages' render forms: a unit's render (its kind and preset) from the neuron page, a whole layer's from the
layer page, and cancelling a layer's render.

POST /n/{model}/{layer}/{index}/render   kind (feature, negative, neuron, dataset), preset, dataset
POST /n/{model}/{layer}/render           preset: every unit of the layer (the bulk lane)
POST /n/{model}/{layer}/cancel           request: the layer request's id (kb.render.layer_renders.LayerRequest.id)
POST /n/{model}/{layer}/caricature       multipart/form-data: image (a file), preset: uploads the image
                                         (kb.web.uploads) and asks for its CARICATURE at the layer

Every post goes through kb.web.auth (same origin, a live session, its CSRF token). The render itself is the API's
requestRender or cancelRenders run on the same schema as the signed-in account, so kb.app.renders (the one place
renders are asked for and cancelled), roles, quotas, ceilings and rate limits are the API's; the cancel button's
jobs are found by kb.app.renders.layer_request_jobs. A page's script
asks for JSON (``{"jobs": [...]}`` or ``{"error": "..."}`` with the status); without it the answer is 303 back to
the page, or the page again with the refusal shown beside the form.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from kb.app import renders
from kb.claims.ids import row_id
from kb.errors import Problem as DomainProblem
from kb.graph.keys import KeyProblem
from kb.render.params import RenderParams
from kb.render.presets import DEFAULT, UnknownChoice, render_choice
from kb.web.annotate import HTTP, Problem
from kb.web.auth import forms
from kb.web.auth.pages import NO_STORE, AuthPages, refused
from kb.web.page_query import ContextFor, QueryFailed, run_query
from kb.web.uploads import body_limit, upload_as

if TYPE_CHECKING:
    from kb.claims.accounts import Account
    from kb.schema import Schema
    from kb.web.pages import Pages

REQUEST = """mutation($k: RenderKind!, $n: [String!], $l: String, $p: RenderParamsInput) {
  requestRender(kind: $k, neurons: $n, layer: $l, params: $p) { id status progress lane } }"""
LAYER_REQUEST = """mutation($k: LayerRenderKind!, $l: String!, $p: RenderParamsInput) {
  requestLayerRender(kind: $k, layer: $l, params: $p) { id status progress } }"""
CANCEL = "mutation($ids: [Int!]!) { cancelRenders(ids: $ids) { id status } }"
DEFAULTS = asdict(RenderParams())


def params_input(params: RenderParams) -> dict[str, Any]:
    """RenderParamsInput's fields that differ from its defaults (GraphQL's names)."""
    names = {"top_k": "topK"}
    return {names.get(k, k): v for k, v in asdict(params).items() if v != DEFAULTS[k]}


class RenderForms:
    def __init__(self, auth: AuthPages, pages: Pages, schema: Schema, context_for: ContextFor) -> None:
        self.auth = auth
        self.pages = pages
        self.schema = schema
        self.context_for = context_for  # account -> kb.schema.context.Context acting as that account

    async def _mutate(self, account: Account, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            return await run_query(self.schema, self.context_for(account), name, query, variables)
        except QueryFailed as exc:
            raise Problem(exc.message, HTTP.get(exc.code, 400), exc.extensions) from None

    async def neuron(self, request: Request) -> Response:
        model, layer, index = (request.path_params[k] for k in ("model", "layer", "index"))
        if row_id(index) is None:
            return HTMLResponse("not found", status_code=404)
        page = f"/n/{model}/{layer}/{index}"
        form = {"kind": "feature", "preset": DEFAULT, "dataset": ""}
        try:
            info, fields = await self.auth.session_post(request)
            form.update({k: fields[k] for k in form if fields.get(k)})
            try:
                kind, params = render_choice(
                    form["kind"], form["preset"], self.context_for(info.account).settings, form["dataset"]
                )
            except UnknownChoice as exc:
                raise Problem(str(exc)) from None
            variables = {"k": kind, "n": [f"{model}/{layer}:{index}"], "p": params_input(params)}
            jobs = (await self._mutate(info.account, "RENDER", REQUEST, variables))["requestRender"]
        except (forms.Refused, Problem) as exc:
            if _wants_json(request):
                return JSONResponse({"error": exc.message}, status_code=exc.status, headers=NO_STORE)
            if isinstance(exc, forms.Refused):
                return refused(request, exc)
            extra = {"render_error": exc.message, "render_form": form}
            return await self.pages.neuron(request, page, extra, exc.status)
        if _wants_json(request):
            return JSONResponse({"jobs": jobs}, headers=NO_STORE)
        return RedirectResponse(f"{page}#renders", status_code=303, headers=NO_STORE)

    async def layer(self, request: Request) -> Response:
        key = f"{request.path_params['model']}/{request.path_params['layer']}"
        preset = DEFAULT
        try:
            info, fields = await self.auth.session_post(request)
            preset = fields.get("preset") or DEFAULT
            try:
                kind, params = render_choice("feature", preset, self.context_for(info.account).settings)
            except UnknownChoice as exc:
                raise Problem(str(exc)) from None
            variables = {"k": kind, "l": key, "p": params_input(params)}
            jobs = (await self._mutate(info.account, "RENDER", REQUEST, variables))["requestRender"]
        except (forms.Refused, Problem) as exc:
            return await self._refusal(request, key, exc, {"preset": preset})
        if _wants_json(request):
            return JSONResponse({"jobs": len(jobs)}, headers=NO_STORE)
        return RedirectResponse(f"/n/{key}#render-layer", status_code=303, headers=NO_STORE)

    async def caricature(self, request: Request) -> Response:
        """An editor's image, uploaded from the layer page, and its caricature at the layer asked for."""
        key = f"{request.path_params['model']}/{request.path_params['layer']}"
        preset = DEFAULT
        try:
            ctx = self.context_for(None)
            info, parts = await self.auth.session_upload(request, body_limit(ctx.settings))
            preset = parts["preset"].data.decode("utf-8", "replace") if "preset" in parts else DEFAULT
            try:
                _, params = render_choice("feature", preset or DEFAULT, ctx.settings)
            except UnknownChoice as exc:
                raise Problem(str(exc)) from None
            image = parts.get("image")
            if image is None or image.filename is None or not image.data:
                raise Problem("choose an image file to upload (PNG, JPEG, GIF, WebP or BMP)")
            try:
                up = await upload_as(info.account, ctx.engine, ctx.settings, image.data)
            except DomainProblem as exc:
                raise Problem(exc.message, HTTP.get(exc.code, 400)) from None
            variables = {
                "k": "CARICATURE",
                "l": key,
                "p": {"size": params.size, "steps": params.steps, "upload": up.sha256},
            }
            job = (await self._mutate(info.account, "RENDER", LAYER_REQUEST, variables))["requestLayerRender"]
        except (forms.Refused, Problem) as exc:
            return await self._refusal(request, key, exc, {"preset": preset}, "caricature_error")
        if _wants_json(request):
            return JSONResponse({"job": job, "upload": up.sha256}, headers=NO_STORE)
        return RedirectResponse(f"/n/{key}#views", status_code=303, headers=NO_STORE)

    async def cancel(self, request: Request) -> Response:
        key = f"{request.path_params['model']}/{request.path_params['layer']}"
        try:
            info, fields = await self.auth.session_post(request)
            context = self.context_for(info.account)
            moderator = info.account.at_least("moderator")
            asked = fields.get("request", "")
            try:
                found = await run_in_threadpool(
                    renders.layer_request_jobs, context.engine, context.graphs, key, asked, info.account.id, moderator
                )
            except (KeyProblem, LookupError, TypeError) as exc:
                raise Problem(str(exc), 404) from None
            ids = found.mine
            if not ids:
                if found.anyone:
                    raise Problem("only who asked for a render and moderators may cancel it", 403)
                raise Problem("nothing of that render is waiting or running: it has ended", 409)
            cancelled = (await self._mutate(info.account, "CANCEL", CANCEL, {"ids": ids}))["cancelRenders"]
        except (forms.Refused, Problem) as exc:
            return await self._refusal(request, key, exc, {})
        if _wants_json(request):
            return JSONResponse({"cancelled": sum(j["status"] == "CANCELLED" for j in cancelled)}, headers=NO_STORE)
        return RedirectResponse(f"/n/{key}#render-layer", status_code=303, headers=NO_STORE)

    async def _refusal(
        self,
        request: Request,
        key: str,
        exc: forms.Refused | Problem,
        extra: dict[str, Any],
        field: str = "render_error",
    ) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=NO_STORE)
        if isinstance(exc, forms.Refused):
            return refused(request, exc)
        return await self.pages._layer(request, key, {field: exc.message, **extra}, exc.status)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def render_form_routes(forms_: RenderForms) -> list[Route]:
    return [
        Route("/n/{model}/{layer}/{index}/render", forms_.neuron, methods=["POST"]),
        Route("/n/{model}/{layer}/render", forms_.layer, methods=["POST"]),
        Route("/n/{model}/{layer}/cancel", forms_.cancel, methods=["POST"]),
        Route("/n/{model}/{layer}/caricature", forms_.caricature, methods=["POST"]),
    ]
