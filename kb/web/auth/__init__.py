"""Accounts in the browser: sign-in sessions, CSRF checks, one's own API tokens (kb.web.auth.pages)."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.routing import Route

from kb.settings import Settings
from kb.web.auth.pages import AuthPages


def auth_routes(engine: sa.Engine, settings: Settings) -> list[Route]:
    pages = AuthPages(engine, settings)
    return [
        Route("/signin", pages.signin_form, methods=["GET"]),
        Route("/signin", pages.signin, methods=["POST"]),
        Route("/signout", pages.signout, methods=["POST"]),
        Route("/account", pages.account, methods=["GET"]),
        Route("/account/tokens", pages.create_token, methods=["POST"]),
        Route("/account/tokens/revoke", pages.revoke_token, methods=["POST"]),
        Route("/account/sessions/revoke", pages.revoke_sessions, methods=["POST"]),
    ]
