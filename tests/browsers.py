"""What the browser tests share: the system's Chromium driven by playwright, people with passwords, signing in
through the header's link, screenshots where $KB_SCREENSHOTS names a folder.

Playwright's own browser download needs the internet, so the tests drive Debian's chromium (bin/setup installs
it) with the flags that let it run headless in a container.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import kb_serve

from kb.claims import accounts as acc
from kb.claims import sessions

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "correct horse battery"
SHOTS = Path(os.environ["KB_SCREENSHOTS"]) if os.environ.get("KB_SCREENSHOTS") else None


def people(engine, *roles: str) -> list[str]:
    """One account with PASSWORD per role (amy, ben, ... with a fresh suffix), in the order given."""
    suffix = secrets.token_hex(3)
    names = [f"{first}-{suffix}" for first in ("amy", "ben", "cho", "dev")[: len(roles)]]
    with engine.begin() as conn:
        for name, role in zip(names, roles, strict=True):
            acc.create_user(conn, name, role)
            sessions.set_password(conn, name, PASSWORD)
    return names


@contextmanager
def served_browser(db_url: str) -> Iterator[tuple[str, object]]:
    """(base URL of a fresh `kb serve` on the database, a launched Chromium); both stopped afterwards."""
    from playwright.sync_api import sync_playwright

    with kb_serve({"KB_DATABASE_URL": db_url}, "--no-render-worker", timeout=120) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield base, browser
        finally:
            browser.close()


def csp_violations(page, into: list[str]) -> None:
    """Collect the page's Content-Security-Policy console messages into ``into``."""
    page.on("console", lambda m: into.append(m.text) if "Content Security Policy" in m.text else None)


def sign_in(page, base: str, name: str, path: str, shot: str | None = None) -> None:
    """Open ``path``, follow the header's "Sign in" link, sign in with the form and land back on ``path``."""
    page.goto(f"{base}{path}")
    page.get_by_role("link", name="Sign in", exact=True).click()
    if shot:
        screenshot(page, shot, full_page=False)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{path}")  # back where the link was


def wait_live(page, timeout_ms: int = 30_000) -> None:
    """Until the page's EventSource is open (the page's scripts set data-live="open" on <html> on the stream's open
    event; the server subscribes before it answers, so nothing committed after this is missed). An assertion on a
    locator, not wait_for_function: the pages' CSP (no 'unsafe-eval') refuses the string predicate that one evals
    once its first check is false (on SQLite, whose follower polls, the stream opens later: it failed there)."""
    from playwright.sync_api import expect

    expect(page.locator("html")).to_have_attribute("data-live", "open", timeout=timeout_ms)


def screenshot(page, name: str, full_page: bool = True) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / name), full_page=full_page)
