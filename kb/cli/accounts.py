"""``kb user`` and ``kb token``: accounts and API tokens."""

from __future__ import annotations

import typer

from kb.app import accounts
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected

users_app = typer.Typer(help="Accounts (roles: viewer, editor, moderator, admin).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (shown once, stored as a hash).", no_args_is_help=True)


@users_app.command("create")
@expected()
def create_user(
    name: str, role: str = typer.Option("editor", "--role"), display_name: str = typer.Option("", "--display-name")
) -> None:
    """Create an account."""
    accounts.create_user(open_engine(), name, role, display_name)
    typer.echo(f"created {name} ({role})")


@users_app.command("password")
@expected()
def set_password(name: str) -> None:
    """Set NAME's password for signing in on the web (read from standard input when it is not a terminal,
    else asked for twice). Ends NAME's open sign-in sessions."""
    import sys

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise CliProblem("the two passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    accounts.set_password(open_engine(), name, password)
    typer.echo(f"password set for {name}")


@users_app.command("signout")
@expected()
def sign_out(name: str) -> None:
    """End every sign-in session of NAME (their API tokens stay; `kb token revoke` ends those)."""
    n = accounts.sign_out_everywhere(open_engine(), name)
    typer.echo(f"ended {n} session(s) of {name}")


@users_app.command("list")
@expected()
def list_users() -> None:
    """List accounts: name, role, display name."""
    for user in accounts.users(open_engine()):
        typer.echo(f"{user.name}  {user.role}  {user.display_name}")


@tokens_app.command("create")
@expected()
def create_token(name: str, note: str = typer.Option("", "--note")) -> None:
    """Create a token for user NAME and print it (once: only its hash is kept)."""
    token = accounts.create_token(open_engine(), name, note)
    typer.echo(token)


@tokens_app.command("revoke")
@expected()
def revoke_token(prefix: str = typer.Argument(..., help="the token, or its first 12 characters")) -> None:
    """Revoke a token (requests with it are refused from then on); `kb token list` shows the prefixes."""
    accounts.revoke_token(open_engine(), prefix)
    typer.echo(f"revoked {prefix[:12]}…")


@tokens_app.command("list")
@expected()
def list_tokens(name: str | None = typer.Argument(None, help="only this user's tokens")) -> None:
    """List tokens (their prefixes, never the tokens): prefix, user, active or revoked, note."""
    for token in accounts.tokens(open_engine(), name):
        typer.echo(f"{token.prefix}…  {token.user}  {'active' if token.active else 'revoked'}  {token.note}")
