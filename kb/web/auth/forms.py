"""What every form post goes through: a same-origin check (Origin, else Referer), the body as a form, the
session cookie and its CSRF token. A cross-site post is refused with 403 whatever cookie it carries."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from kb.claims import sessions
from kb.settings import Settings

MAX_FORM = 64 * 1024
MAX_TEXT_FORM = 1 << 20  # a claim's body (100,000 characters) URL-encoded: up to the server's body limit
SIGNIN_COOKIE = "kb_signin"  # the sign-in form's own CSRF token (double submit), before there is a session


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    port = parts.port
    default = {"http": 80, "https": 443}[parts.scheme]
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def allowed_origins(request: Request, settings: Settings) -> set[str]:
    own = {_origin(str(request.base_url)), _origin(settings.public_url)}
    return {o for o in own if o}


def check_origin(request: Request, settings: Settings) -> None:
    """The post comes from one of this server's own pages: Origin if the browser sent one, else Referer."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            raise Refused(403, "refused: a form post must come from this site's own pages (no Origin or Referer)")
        origin = referer
    if _origin(origin) not in allowed_origins(request, settings):
        raise Refused(403, "refused: a cross-site form post")


async def form(request: Request, max_bytes: int = MAX_FORM, max_fields: int = 50) -> dict[str, str]:
    """The posted fields, the first value of each."""
    return {k: v[0] for k, v in (await form_lists(request, max_bytes, max_fields)).items()}


async def form_lists(request: Request, max_bytes: int = MAX_FORM, max_fields: int = 50) -> dict[str, list[str]]:
    """The posted fields, every value of each (checkboxes of one name); at most ``max_fields`` of them."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise Refused(415, "a form post is application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > max_bytes:
        raise Refused(413, "the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form could not be read") from None
    return fields


def secure_cookies(request: Request, settings: Settings) -> bool:
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def set_session_cookie(response: Response, request: Request, settings: Settings, secret: str) -> None:
    response.set_cookie(
        sessions.COOKIE,
        secret,
        max_age=int(settings.session_ttl_s),
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
    )


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(
        sessions.COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request, settings)
    )


def safe_next(target: str | None, default: str = "/account") -> str:
    """Only a path on this site: never //host or a scheme (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in target):  # browsers drop tabs and newlines: "/\t/evil"
        return default
    return target


def same_token(a: str | None, b: str | None) -> bool:
    return sessions.same_secret(a or "", b or "")
