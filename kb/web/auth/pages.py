"""Sign in, sign out, and one's own account page (API tokens, each shown once; sessions).

Every post is checked by kb.web.auth.forms (same origin, then the CSRF token: the session's, or for the sign-in
form its own double-submit cookie). Password hashing and the database run in a thread, not on the event loop.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal, ParamSpec, TypeVar, overload

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from kb import metrics
from kb.app import accounts as account_admin
from kb.app import sign_in
from kb.claims import sessions
from kb.claims.errors import ClaimProblem, RateLimited, Unauthenticated
from kb.claims.ids import row_id
from kb.settings import Settings
from kb.web.auth import forms
from kb.web.auth.current import SCOPE_KEY, signed_in
from kb.web.client_address import client_address
from kb.web.multipart import Part

P = ParamSpec("P")
R = TypeVar("R")

NO_STORE = {"cache-control": "no-store"}
PURGE_EVERY_S = 600.0


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page of the site (templates/, extending base.html: the header shows who is signed in), never cached."""
    from kb.web.templating import templates  # the pages' environment (kb.web.templating imports this package)

    page: HTMLResponse = templates().TemplateResponse(request, template, context, status_code=status, headers=NO_STORE)
    return page


class AuthPages:
    def __init__(self, engine: sa.Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.limits = sessions.Limits(
            settings.signin_failures_per_account,
            settings.signin_failures_per_address,
            settings.signin_window_s,
            settings.signin_backoff_first_s,
            settings.signin_backoff_max_s,
        )
        self._next_purge = 0.0  # time.monotonic() after which a sign-in first deletes what has expired

    # --- helpers -------------------------------------------------------------------------------------------

    async def current(self, request: Request) -> sessions.SessionInfo | None:
        """The request's live session: the one kb.web.auth.current looked up for it, else looked up now."""
        if SCOPE_KEY in request.scope:
            return signed_in(request)
        secret = request.cookies.get(sessions.COOKIE)
        return await run_in_threadpool(sign_in.session_of, self.engine, secret) if secret else None

    @overload
    async def session_post(
        self, request: Request, lists: Literal[False] = False, max_bytes: int = ..., max_fields: int = ...
    ) -> tuple[sessions.SessionInfo, dict[str, str]]: ...

    @overload
    async def session_post(
        self, request: Request, lists: Literal[True], max_bytes: int = ..., max_fields: int = ...
    ) -> tuple[sessions.SessionInfo, dict[str, list[str]]]: ...

    async def session_post(
        self, request: Request, lists: bool = False, max_bytes: int = forms.MAX_FORM, max_fields: int = 50
    ) -> tuple[sessions.SessionInfo, dict[str, str]] | tuple[sessions.SessionInfo, dict[str, list[str]]]:
        """A post from a signed-in page: same origin, a live session, and that session's CSRF token. The fields
        as their first values, or with ``lists`` every value (checkboxes); ``max_bytes``: the largest body."""
        forms.check_origin(request, self.settings)
        if lists:
            many = await forms.form_lists(request, max_bytes, max_fields)
            tokens = many.get("csrf")
            return await self._session_with(request, tokens[0] if tokens else None), many
        fields = await forms.form(request, max_bytes, max_fields)
        return await self._session_with(request, fields.get("csrf")), fields

    async def _session_with(self, request: Request, token: str | None) -> sessions.SessionInfo:
        """The request's live session, if the form's CSRF token is that session's (else Refused: 401, 403)."""
        info = await self.current(request)
        if info is None:
            raise forms.Refused(401, "you are not signed in (or your session ended): sign in again")
        if not forms.same_token(token, info.csrf_token):
            raise forms.Refused(403, "refused: the form's CSRF token is not this session's")
        return info

    async def session_upload(self, request: Request, max_bytes: int) -> tuple[sessions.SessionInfo, dict[str, Part]]:
        """``session_post`` for a form that posts a file (multipart/form-data, kb.web.multipart): the same
        origin, session and CSRF checks; the parts by name."""
        from kb.web import multipart

        forms.check_origin(request, self.settings)
        body = await request.body()
        if len(body) > max_bytes:
            raise forms.Refused(413, f"the form is too large: at most {max_bytes} bytes")
        try:
            parts = multipart.parse(body, request.headers.get("content-type", ""))
            token = multipart.text(parts, "csrf")
        except multipart.BadMultipart as exc:
            raise forms.Refused(400, f"the form could not be read: {exc}") from None
        return await self._session_with(request, token or None), parts

    def _refused(self, request: Request, exc: forms.Refused) -> HTMLResponse:
        return refused(request, exc)

    # --- sign in / out -------------------------------------------------------------------------------------

    async def signin_form(self, request: Request) -> Response:
        return self._signin_page(request, forms.safe_next(request.query_params.get("next")))

    def _signin_page(
        self, request: Request, next_: str, error: str = "", name: str = "", status: int = 200
    ) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render(
            request, "auth/signin.html", status, title="Sign in", signin_csrf=token, next=next_, error=error, name=name
        )
        response.set_cookie(
            forms.SIGNIN_COOKIE,
            token,
            max_age=3600,
            path="/signin",
            httponly=True,
            samesite="strict",
            secure=forms.secure_cookies(request, self.settings),
        )
        return response

    async def signin(self, request: Request) -> Response:
        try:
            forms.check_origin(request, self.settings)
            fields = await forms.form(request)
            if not forms.same_token(fields.get("csrf"), request.cookies.get(forms.SIGNIN_COOKIE)):
                raise forms.Refused(403, "refused: the sign-in form's token does not match (reload the page)")
        except forms.Refused as exc:
            return self._refused(request, exc)
        name = (fields.get("name") or "").strip().lower()
        password = fields.get("password") or ""
        next_ = forms.safe_next(fields.get("next"))
        address = client_address(request.scope)
        try:
            secret = await run_in_threadpool(
                self._sign_in,
                name,
                password,
                address,
                request.headers.get("user-agent"),
                request.cookies.get(sessions.COOKIE),
            )
        except RateLimited as exc:
            metrics.RATE_LIMITED.labels("signin").inc()
            page = self._signin_page(request, next_, str(exc), name, status=429)
            page.headers["retry-after"] = str(exc.extensions.get("retryAfter", 60))
            return page
        except Unauthenticated as exc:
            return self._signin_page(request, next_, str(exc), name, status=401)
        response = RedirectResponse(next_, status_code=303, headers=NO_STORE)
        forms.set_session_cookie(response, request, self.settings, secret)
        response.delete_cookie(forms.SIGNIN_COOKIE, path="/signin")
        return response

    def _sign_in(self, name: str, password: str, address: str, user_agent: str | None, old: str | None) -> str:
        self._purge()
        return sign_in.sign_in(
            self.engine, self.limits, self.settings.session_ttl_s, name, password, address, user_agent or "", old
        )

    def _purge(self) -> None:
        """Failed sign-ins past their window and long-ended sessions go, at most once per PURGE_EVERY_S here:
        they are only ever added by sign-ins, so deleting them on sign-in keeps the tables small."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        sign_in.purge(self.engine, self.settings.signin_window_s)

    async def signout(self, request: Request) -> Response:
        try:
            info, _ = await self.session_post(request)
        except forms.Refused as exc:
            if exc.status != 401:
                return self._refused(request, exc)
            info = None  # already signed out: clear the cookie all the same
        if info is not None:
            await run_in_threadpool(sign_in.sign_out, self.engine, info.id)
        response = RedirectResponse("/signin", status_code=303, headers=NO_STORE)
        forms.clear_session_cookie(response, request, self.settings)
        return response

    # --- the account page ----------------------------------------------------------------------------------

    async def account(self, request: Request) -> Response:
        info = await self.current(request)
        if info is None:
            return RedirectResponse("/signin?next=/account", status_code=303, headers=NO_STORE)
        return await run_in_threadpool(self._account_page, request, info)

    def _account_page(
        self, request: Request, info: sessions.SessionInfo, new_token: str = "", message: str = ""
    ) -> HTMLResponse:
        tokens = sign_in.own_tokens(self.engine, info.account.id)
        return render(
            request,
            "auth/account.html",
            title=info.account.name,
            account=info.account,
            csrf=info.csrf_token,
            expires=info.expires_at.strftime("%Y-%m-%d %H:%M"),
            tokens=tokens,
            new_token=new_token,
            message=message,
        )

    async def create_token(self, request: Request) -> Response:
        try:
            info, fields = await self.session_post(request)
        except forms.Refused as exc:
            return self._refused(request, exc)
        note = (fields.get("note") or "").strip()[:200]
        token = await run_in_threadpool(account_admin.create_token, self.engine, info.account.name, note)
        return await run_in_threadpool(self._account_page, request, info, token, "")

    async def revoke_token(self, request: Request) -> Response:
        try:
            info, fields = await self.session_post(request)
        except forms.Refused as exc:
            return self._refused(request, exc)
        token_id = row_id(fields.get("id"))
        if token_id is None:
            return self._refused(request, forms.Refused(400, "no token named"))
        try:
            await run_in_threadpool(sign_in.revoke_own_token, self.engine, info.account.id, token_id)
        except ClaimProblem as exc:
            return render(request, "auth/message.html", 404, title="Not found", message=str(exc))
        return RedirectResponse("/account", status_code=303, headers=NO_STORE)

    async def revoke_sessions(self, request: Request) -> Response:
        try:
            info, _ = await self.session_post(request)
        except forms.Refused as exc:
            return self._refused(request, exc)
        await run_in_threadpool(account_admin.sign_out_everywhere, self.engine, info.account.name)
        response = RedirectResponse("/signin", status_code=303, headers=NO_STORE)
        forms.clear_session_cookie(response, request, self.settings)
        return response


def refused(request: Request, exc: forms.Refused) -> HTMLResponse:
    """A refused form post: its status (401, 403, 413, 415, 400) and why, on a page of the site."""
    title = "Forbidden" if exc.status == 403 else "Not signed in" if exc.status == 401 else "Bad request"
    return render(request, "auth/message.html", exc.status, title=title, message=exc.message, signin=exc.status == 401)
