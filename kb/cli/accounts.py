"""``kb user`` and ``kb token``: accounts and API tokens."""

from __future__ import annotations

import sqlalchemy as sa
import typer

from kb.claims import accounts
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.db.claim_tables import api_token_table, user_table

users_app = typer.Typer(help="Accounts (roles: viewer, editor, moderator, admin).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (shown once, stored as a hash).", no_args_is_help=True)


@users_app.command("create")
@expected()
def create_user(
    name: str, role: str = typer.Option("editor", "--role"), display_name: str = typer.Option("", "--display-name")
) -> None:
    """Create an account."""
    with open_engine().begin() as conn:
        accounts.create_user(conn, name, role, display_name)
    typer.echo(f"created {name} ({role})")


@users_app.command("password")
@expected()
def set_password(name: str) -> None:
    """Set NAME's password for signing in on the web (read from standard input when it is not a terminal,
    else asked for twice). Ends NAME's open sign-in sessions."""
    import sys

    from kb.claims import sessions
    from kb.cli.errors import CliProblem

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise CliProblem("the two passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    with open_engine().begin() as conn:
        sessions.set_password(conn, name, password)
    typer.echo(f"password set for {name}")


@users_app.command("signout")
@expected()
def sign_out(name: str) -> None:
    """End every sign-in session of NAME (their API tokens stay; `kb token revoke` ends those)."""
    from kb.claims import sessions

    with open_engine().begin() as conn:
        n = sessions.revoke_all(conn, accounts.user_id(conn, name))
    typer.echo(f"ended {n} session(s) of {name}")


@users_app.command("list")
@expected()
def list_users() -> None:
    """List accounts: name, role, display name."""
    t = user_table
    with open_engine().connect() as conn:
        for row in conn.execute(sa.select(t).order_by(t.c.name)):
            typer.echo(f"{row.name}  {row.role}  {row.display_name}")


@tokens_app.command("create")
@expected()
def create_token(name: str, note: str = typer.Option("", "--note")) -> None:
    """Create a token for user NAME and print it (once: only its hash is kept)."""
    with open_engine().begin() as conn:
        token = accounts.create_token(conn, name, note)
    typer.echo(token)


@tokens_app.command("revoke")
@expected()
def revoke_token(prefix: str = typer.Argument(..., help="the token, or its first 12 characters")) -> None:
    """Revoke a token (requests with it are refused from then on); `kb token list` shows the prefixes."""
    with open_engine().begin() as conn:
        accounts.revoke_token(conn, prefix)
    typer.echo(f"revoked {prefix[:12]}…")


@tokens_app.command("list")
@expected()
def list_tokens(name: str | None = typer.Argument(None, help="only this user's tokens")) -> None:
    """List tokens (their prefixes, never the tokens): prefix, user, active or revoked, note."""
    t, u = api_token_table, user_table
    q = sa.select(t.c.prefix, t.c.note, t.c.revoked_at, u.c.name).join(u, u.c.id == t.c.user_id).order_by(t.c.id)
    with open_engine().connect() as conn:
        if name is not None:
            if conn.execute(sa.select(u.c.id).where(u.c.name == name)).first() is None:
                raise CliProblem(f"no user {name!r}")
            q = q.where(u.c.name == name)
        for row in conn.execute(q):
            state = "revoked" if row.revoked_at else "active"
            typer.echo(f"{row.prefix}…  {row.name}  {state}  {row.note}")
