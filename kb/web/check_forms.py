"""A circuit page's checks by experiment: what the "Run check" form offers (editors: the data sets, the ablations,
the number of images), the checks still open (the page reloads itself until they end), and the form's post.

POST /circuits/{number}/check   dataset, ablation, images: checkCircuit of the circuit's current revision

The post goes through kb.web.auth (same origin, a live session, its CSRF token) and runs the API's checkCircuit
as the signed-in account (kb.app.renders.check_circuit, the one place checks are asked for): roles, quotas
and rate limits are the API's. A refusal shows the page again with the message beside the form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kb.claims import sessions
from kb.claims.ids import row_id
from kb.experiments import figures
from kb.experiments.store import open_checks
from kb.render.datasets import dataset_names
from kb.web.annotate import HTTP, Problem
from kb.web.auth import forms
from kb.web.auth.pages import NO_STORE, AuthPages, refused
from kb.web.page_query import ContextFor, QueryFailed, run_query

if TYPE_CHECKING:
    from kb.schema import Schema
    from kb.schema.context import Context
    from kb.web.circuit_pages import CircuitPages

CHECK = """mutation($k: String!, $d: String!, $a: Ablation!, $n: Int!) {
  checkCircuit(key: $k, dataset: $d, ablation: $a, images: $n) { id status } }"""
IMAGES = (32, 64, 256, 1024)


async def check_view(context: Context, me: sessions.SessionInfo | None, circuit_id: int) -> dict[str, Any]:
    """The open checks of the circuit, and for editors the form's choices."""

    def read() -> tuple[list[dict[str, Any]], list[str]]:
        with context.engine.connect() as conn:
            return open_checks(conn, circuit_id), dataset_names(conn)

    running, datasets = await run_in_threadpool(read)
    editor = me is not None and me.account.at_least("editor")
    return {
        "open_checks": running,
        "check_form": {"datasets": datasets, "ablations": figures.ABLATIONS, "images": IMAGES} if editor else None,
        "ablation_point": figures.ABLATION_POINT,
    }


class CheckForms:
    def __init__(self, auth: AuthPages, circuit_pages: CircuitPages, schema: Schema, context_for: ContextFor) -> None:
        self.auth = auth
        self.circuit_pages = circuit_pages
        self.schema = schema
        self.context_for = context_for  # account -> kb.schema.context.Context acting as that account

    async def check(self, request: Request) -> Response:
        number = request.path_params["number"]
        if row_id(number) is None:
            return Response("not found", status_code=404)
        form = {"dataset": "", "ablation": "mean", "images": "256"}
        try:
            info, fields = await self.auth.session_post(request)
            form.update({k: fields[k] for k in form if fields.get(k)})
            images = row_id(form["images"])
            if images is None or form["ablation"] not in figures.ABLATIONS:
                raise Problem("choose an ablation and a number of images")
            variables = {"k": f"circuit:{number}", "d": form["dataset"], "a": form["ablation"].upper(), "n": images}
            try:
                await run_query(self.schema, self.context_for(info.account), "CHECK", CHECK, variables)
            except QueryFailed as exc:
                raise Problem(exc.message, HTTP.get(exc.code, 400), exc.extensions) from None
        except forms.Refused as exc:
            return refused(request, exc)
        except Problem as exc:
            return await self.circuit_pages.circuit(
                request, {"check_error": exc.message, "check_values": form}, exc.status
            )
        return RedirectResponse(f"/circuits/{number}#experiments", status_code=303, headers=NO_STORE)


def check_form_routes(forms_: CheckForms) -> list[Route]:
    return [Route("/circuits/{number}/check", forms_.check, methods=["POST"])]
