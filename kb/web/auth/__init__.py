"""Accounts in the browser: sign-in sessions, CSRF checks, one's own API tokens (kb.web.auth.pages)."""

from __future__ import annotations

from starlette.routing import Route

from kb.web.auth.pages import AuthPages


def auth_routes(pages: AuthPages) -> list[Route]:
    return [
        Route("/signin", pages.signin_form, methods=["GET"]),
        Route("/signin", pages.signin, methods=["POST"]),
        Route("/signout", pages.signout, methods=["POST"]),
        Route("/account", pages.account, methods=["GET"]),
        Route("/account/tokens", pages.create_token, methods=["POST"]),
        Route("/account/tokens/revoke", pages.revoke_token, methods=["POST"]),
        Route("/account/sessions/revoke", pages.revoke_sessions, methods=["POST"]),
    ]
