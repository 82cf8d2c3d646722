"""Annotation in the browser: the form posts of the neuron and claim pages, and the moderation queue.

POST /n/{model}/{layer}/{index}          propose a claim about the unit (label, kind, body, confidence, evidence)
POST /c/{n}/review                       support or dispute, with an optional comment
GET  /c/{n}/edit, POST /c/{n}/edit       edit against the revision the form was opened on (EDIT_CONFLICT:
                                         the current revision beside the text you sent, to merge and save again)
POST /c/{n}/status                       a status change (moderators; a claim's author may retract it)
POST /c/{n}/circuit                      move the claim to a newer revision of its circuit (a content edit)
GET  /moderation                         proposed and disputed claims, oldest first (moderators)

Every post goes through kb.web.auth (same origin, a live session, its CSRF token). The change itself is the
GraphQL mutation the API has, run on the same schema with the session's account in the context, so roles, rate
limits, revisions, moderation rules and activity rows are the API's. Success answers 303 back to the page;
a refusal re-shows the page with the message and everything typed still in the form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from kb.claims import sessions
from kb.claims.accounts import Account
from kb.claims.claims import may_set_status
from kb.claims.content import KINDS, STATUSES
from kb.claims.ids import row_id
from kb.web.auth import forms
from kb.web.auth.current import signed_in
from kb.web.auth.pages import NO_STORE, AuthPages, refused, render
from kb.web.page_query import ContextFor, QueryFailed, run_query
from kb.web.pages import Pages

if TYPE_CHECKING:
    from kb.schema import Schema

CREATE = "mutation($i: ClaimInput!) { createClaim(input: $i) { key } }"
REVIEW = """mutation($k: String!, $v: Verdict!, $c: String!) {
  reviewClaim(key: $k, verdict: $v, comment: $c) { revision } }"""
UPDATE = """mutation($k: String!, $r: Int!, $p: ClaimPatch!, $m: String!) {
  updateClaim(key: $k, expectedRevision: $r, patch: $p, message: $m) { revision } }"""
STATUS = """mutation($k: String!, $r: Int!, $s: ClaimStatus!, $m: String!) {
  setClaimStatus(key: $k, expectedRevision: $r, status: $s, message: $m) { revision } }"""
CURRENT = """query($k: String!) { claim(key: $k) { key revision label kind body status confidence model
  author { name } revisions { revision createdAt message author { name displayName } } } }"""
QUEUE = """fragment Queued on ClaimConnection { totalCount edges { node { key label kind status revision createdAt
  updatedAt supportCount disputeCount author { name displayName } subjects { key } } } }
{ proposed: claims(status: PROPOSED, first: 100) { ...Queued } disputed: claims(status: DISPUTED, first: 100) {
  ...Queued } }"""

HTTP = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "BAD_KEY": 404,
    "EDIT_CONFLICT": 409,
    "TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
}
SHA = re.compile(r"^[0-9a-f]{64}$")
DIGITS = re.compile(r"[0-9]{1,9}")
RENDER_EVIDENCE = ("FEATURE_VISUALIZATION", "DATASET_EXAMPLES", "FEATURE_IMPLEMENTATION")
STATUS_ACTIONS = {"PROPOSED": "Propose again", "SUPPORTED": "Mark supported", "DISPUTED": "Mark disputed"}
STATUS_ACTIONS["RETRACTED"] = "Retract"


class Problem(Exception):
    """Refused input or a coded error from the mutation: the message, its HTTP status, its extensions."""

    def __init__(self, message: str, status: int = 400, extensions: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extensions = extensions or {}


@dataclass
class ClaimForm:
    """What the claim forms carry, exactly as typed (re-shown as it came when refused)."""

    label: str = ""
    kind: str = "FEATURE"
    body: str = ""
    confidence: str = ""
    message: str = ""
    renders: list[str] = field(default_factory=list)  # EVIDENCE_KIND:sha256 of the renders ticked as evidence
    doi: str = ""
    url: str = ""
    expected: str = ""  # the revision the edit was made against

    @classmethod
    def of(cls, fields: dict[str, list[str]]) -> ClaimForm:
        one = {k: (v[0] if v else "") for k, v in fields.items()}
        return cls(
            label=one.get("label", ""),
            kind=one.get("kind", "FEATURE"),
            body=one.get("body", "").replace("\r\n", "\n"),
            confidence=one.get("confidence", "").strip(),
            message=one.get("message", ""),
            renders=list(fields.get("render", [])),
            doi=one.get("doi", "").strip(),
            url=one.get("url", "").strip(),
            expected=one.get("expectedRevision", "").strip(),
        )

    def checked(self) -> dict[str, Any]:
        """The fields the API takes, checked as far as a form can be before the domain's own checks."""
        if self.kind not in KINDS:
            raise Problem(f"Kind must be one of {', '.join(k.lower() for k in KINDS)}")
        try:
            confidence = float(self.confidence) if self.confidence else None
        except ValueError:
            raise Problem("Confidence is a number from 0 to 1 (or empty)") from None
        return {"label": self.label, "kind": self.kind, "body": self.body, "confidence": confidence}


def _lists(fields: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    return {k: (v if isinstance(v, list) else [v]) for k, v in fields.items()}


def _neuron_key(rest: str) -> str | None:
    """model[@hash]/layer/index (a neuron page's path after /n/) as a key, or None."""
    parts = rest.strip("/").split("/")
    if len(parts) != 3 or row_id(parts[2]) is None:
        return None
    return f"{parts[0]}/{parts[1]}:{parts[2]}"


def status_actions(account: Account | None, author: str | None, status: str) -> list[dict[str, str]]:
    """The status buttons an account gets on a claim: the moderation rules of kb.claims.claims.may_set_status."""
    if account is None:
        return []
    is_author = author == account.name
    return [
        {"status": s, "title": STATUS_ACTIONS[s]}
        for s in STATUSES
        if s != status and may_set_status(account, is_author, status, s)
    ]


def may_edit(account: Account | None, author: str | None) -> bool:
    """As kb.claims.claims.update_claim: its author (an editor) or a moderator."""
    if account is None:
        return False
    return account.at_least("moderator") or (account.at_least("editor") and author == account.name)


class Annotate:
    def __init__(self, auth: AuthPages, pages: Pages, schema: Schema, context_for: ContextFor) -> None:
        self.auth = auth
        self.pages = pages
        self.schema = schema
        self.context_for = context_for  # account -> kb.schema.context.Context acting as that account

    async def _data(
        self, name: str, query: str, variables: dict[str, Any], account: Account | None = None
    ) -> dict[str, Any]:
        """The query's data: its errors raise QueryFailed (logged), which the app answers with the message page."""
        return await run_query(self.schema, self.context_for(account), name, query, variables)

    async def _mutate(self, account: Account, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._data(name, query, variables, account)
        except QueryFailed as exc:
            raise Problem(exc.message, HTTP.get(exc.code, 400), exc.extensions) from None

    async def _read(self, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._data(name, query, variables)
        except QueryFailed as exc:
            raise Problem(exc.message, HTTP.get(exc.code, 400)) from None

    # --- the neuron page -----------------------------------------------------------------------------------

    async def neuron_post(self, request: Request) -> Response:
        return await self.propose(request, request.path_params["rest"].strip("/"))

    async def propose(self, request: Request, rest: str) -> Response:
        key = _neuron_key(rest)
        if key is None:
            return HTMLResponse("not found", status_code=404)
        try:
            info, fields = await self.auth.session_post(request, lists=True, max_bytes=forms.MAX_TEXT_FORM)
        except forms.Refused as exc:
            return refused(request, exc)
        form = ClaimForm.of(_lists(fields))
        try:
            claim = form.checked()
            evidence = [{"kind": "CITATION", "doi": form.doi}] if form.doi else []
            if form.url:
                evidence.append({"kind": "CITATION", "url": form.url})
            for ticked in form.renders:  # EVIDENCE_KIND:sha256, one per picture on the page
                kind, _, sha = ticked.partition(":")
                if kind not in RENDER_EVIDENCE or not SHA.match(sha):
                    raise Problem("a ticked render is not one of this unit's pictures")
                evidence.append({"kind": kind, "neuron": key, "visualization": sha})
            made = await self._mutate(
                info.account,
                "CREATE",
                CREATE,
                {"i": {**claim, "subjects": [key], "evidence": evidence, "message": form.message}},
            )
        except Problem as exc:
            extra = {"propose": form, "propose_error": exc.message}
            return await self.pages.neuron(request, "/n/" + rest, extra, exc.status)
        number = made["createClaim"]["key"].split(":", 1)[1]
        return RedirectResponse(f"/n/{rest}#claim-{number}", status_code=303, headers=NO_STORE)

    async def _claim_post(
        self, request: Request, max_bytes: int = forms.MAX_FORM
    ) -> tuple[str, sessions.SessionInfo, dict[str, Any]] | Response:
        """(claim number, session, fields) of a post to /c/N/...: the session's own, from this site; else the answer
        (404 for a number that is none, the refusal page for a post that is not the session's)."""
        number = request.path_params["number"]
        if row_id(number) is None:
            return HTMLResponse("not found", status_code=404)
        try:
            info, fields = await self.auth.session_post(request, max_bytes=max_bytes)
        except forms.Refused as exc:
            return refused(request, exc)
        return number, info, fields

    # --- reviews -------------------------------------------------------------------------------------------

    async def review(self, request: Request) -> Response:
        posted = await self._claim_post(request, forms.MAX_TEXT_FORM)
        if isinstance(posted, Response):
            return posted
        number, info, fields = posted
        back = forms.safe_next(fields.get("next"), f"/c/{number}")
        verdict, comment = fields.get("verdict", ""), fields.get("comment", "")
        try:
            if verdict not in ("SUPPORT", "DISPUTE"):
                raise Problem("press Support or Dispute")
            await self._mutate(info.account, "REVIEW", REVIEW, {"k": f"claim:{number}", "v": verdict, "c": comment})
        except Problem as exc:
            extra = {"review": {"key": f"claim:{number}", "comment": comment, "error": exc.message}}
            if back.startswith("/n/"):
                return await self.pages.neuron(request, back.split("#")[0], extra, exc.status)
            return await self.pages.claim(request, extra, exc.status)
        return RedirectResponse(back if "#" in back else f"{back}#claim-{number}", status_code=303, headers=NO_STORE)

    # --- editing -------------------------------------------------------------------------------------------

    async def edit_form(self, request: Request) -> Response:
        number = request.path_params["number"]
        if row_id(number) is None:
            return HTMLResponse("not found", status_code=404)
        me = signed_in(request)
        if me is None:
            return RedirectResponse(f"/signin?next=/c/{number}/edit", status_code=303, headers=NO_STORE)
        try:
            current = (await self._read("CURRENT", CURRENT, {"k": f"claim:{number}"}))["claim"]
        except Problem as exc:
            return render(request, "auth/message.html", exc.status, title="Not found", message=exc.message)
        form = ClaimForm(
            label=current["label"],
            kind=current["kind"],
            body=current["body"],
            confidence="" if current["confidence"] is None else f"{current['confidence']:g}",
            expected=str(current["revision"]),
        )
        return self._edit_page(request, me.account, current, form)

    def _edit_page(
        self,
        request: Request,
        account: Account,
        current: dict[str, Any],
        form: ClaimForm,
        error: str = "",
        status: int = 200,
        conflict: bool = False,
    ) -> HTMLResponse:
        allowed = may_edit(account, current["author"]["name"])
        return render(
            request,
            "claim_edit.html",
            status if allowed else 403,
            title=f"Edit {current['label']}",
            c=current,
            form=form,
            kinds=KINDS,
            error=error if allowed else f"only {current['key']}'s author or a moderator may edit it",
            allowed=allowed,
            conflict=conflict,
            last=current["revisions"][-1],
        )

    async def save(self, request: Request) -> Response:
        posted = await self._claim_post(request, forms.MAX_TEXT_FORM)
        if isinstance(posted, Response):
            return posted
        number, info, fields = posted
        form = ClaimForm.of(_lists(fields))
        key = f"claim:{number}"
        try:
            patch = form.checked()
            expected = row_id(form.expected)
            if expected is None:
                raise Problem("the form does not say which revision it edits: open it again from the claim page")
            await self._mutate(info.account, "UPDATE", UPDATE, {"k": key, "r": expected, "p": patch, "m": form.message})
        except Problem as exc:
            try:
                current = (await self._read("CURRENT", CURRENT, {"k": key}))["claim"]
            except Problem as gone:
                return render(request, "auth/message.html", gone.status, title="Not found", message=gone.message)
            conflict = exc.extensions.get("code") == "EDIT_CONFLICT"
            if conflict:  # yours stays in the form, now against the revision you have seen beside it
                form.expected = str(current["revision"])
            return self._edit_page(request, info.account, current, form, exc.message, exc.status, conflict)
        return RedirectResponse(f"/c/{number}", status_code=303, headers=NO_STORE)

    async def set_status(self, request: Request) -> Response:
        posted = await self._claim_post(request)
        if isinstance(posted, Response):
            return posted
        number, info, fields = posted
        status, expected = fields.get("status", ""), row_id(fields.get("expectedRevision"))
        try:
            if status not in STATUSES:
                raise Problem(f"status must be one of {', '.join(STATUSES)}")
            if expected is None:
                raise Problem("the form does not say which revision it judges: reload the claim page")
            variables = {"k": f"claim:{number}", "r": expected, "s": status, "m": fields.get("message", "")}
            await self._mutate(info.account, "STATUS", STATUS, variables)
        except Problem as exc:
            message = exc.message
            if exc.extensions.get("code") == "EDIT_CONFLICT":
                message = f"Someone changed the claim first ({message}): here is its current revision; choose again."
            return await self.pages.claim(request, {"status_error": message}, exc.status)
        return RedirectResponse(f"/c/{number}", status_code=303, headers=NO_STORE)

    async def move_circuit(self, request: Request) -> Response:
        """The claim pinned to the circuit revision the page offered (circuit:N@R): updateClaim's circuit."""
        posted = await self._claim_post(request)
        if isinstance(posted, Response):
            return posted
        number, info, fields = posted
        circuit, expected = fields.get("circuit", ""), fields.get("expectedRevision", "")
        try:
            if not DIGITS.fullmatch(expected):
                raise Problem("the form does not say which revision it edits: reload the claim page")
            m = f"moved to {circuit}"[:500]
            variables = {"k": f"claim:{number}", "r": int(expected), "p": {"circuit": circuit}, "m": m}
            await self._mutate(info.account, "UPDATE", UPDATE, variables)
        except Problem as exc:
            return await self.pages.claim(request, {"circuit_error": exc.message}, exc.status)
        return RedirectResponse(f"/c/{number}", status_code=303, headers=NO_STORE)

    # --- moderation ----------------------------------------------------------------------------------------

    async def moderation(self, request: Request) -> Response:
        me = signed_in(request)
        if me is None:
            return RedirectResponse("/signin?next=/moderation", status_code=303, headers=NO_STORE)
        if not me.account.at_least("moderator"):
            return render(
                request, "auth/message.html", 403, title="Forbidden", message="the moderation queue is for moderators"
            )
        data = await self._data("QUEUE", QUEUE, {})
        claims = [e["node"] for part in ("proposed", "disputed") for e in data[part]["edges"]]
        claims.sort(key=lambda c: (c["createdAt"], c["key"]))
        return render(
            request,
            "moderation.html",
            title="Moderation",
            claims=claims,
            proposed=data["proposed"]["totalCount"],
            disputed=data["disputed"]["totalCount"],
        )


def annotate_routes(annotate: Annotate) -> list[Route]:
    return [
        Route("/n/{rest:path}", annotate.neuron_post, methods=["POST"]),
        Route("/c/{number}/review", annotate.review, methods=["POST"]),
        Route("/c/{number}/edit", annotate.edit_form, methods=["GET"]),
        Route("/c/{number}/edit", annotate.save, methods=["POST"]),
        Route("/c/{number}/status", annotate.set_status, methods=["POST"]),
        Route("/c/{number}/circuit", annotate.move_circuit, methods=["POST"]),
        Route("/moderation", annotate.moderation, methods=["GET"]),
    ]
