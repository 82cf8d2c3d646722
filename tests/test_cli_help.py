"""The CLI's help and small conveniences: no `<bool>` on flags, help text on every account command,
`kb token list NAME`, the loopback warning, links that follow the running server."""

import secrets

import typer.main
from typer.testing import CliRunner

from kb.cli import local_server
from kb.cli.main import app
from kb.cli.serve import loopback_warning
from kb.settings import get_settings

runner = CliRunner()


def test_flags_show_no_type_and_every_account_command_has_help():
    for args in ([], ["token"], ["user"], ["render"], ["serve"]):
        r = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "120"})
        assert r.exit_code == 0 and "--help" in r.output
        assert "<bool>" not in r.output, r.output
    group = typer.main.get_command(app)
    for name in ("user", "token"):
        for sub, cmd in group.commands[name].commands.items():
            assert cmd.get_short_help_str().strip(), f"kb {name} {sub} has no help"


def test_token_list_filters_by_user(kb_env, engine):
    ada, bob = f"ada-{secrets.token_hex(3)}", f"bob-{secrets.token_hex(3)}"
    for name in (ada, bob):
        assert runner.invoke(app, ["user", "create", name]).exit_code == 0
        assert runner.invoke(app, ["token", "create", name]).exit_code == 0
    r = runner.invoke(app, ["token", "list", ada])
    assert r.exit_code == 0 and ada in r.stdout and bob not in r.stdout
    assert len(r.stdout.splitlines()) == 1
    r = runner.invoke(app, ["token", "list", "nobody-here"])
    assert r.exit_code == 1 and r.stderr.strip() == "error: no user 'nobody-here'"


def test_loopback_warning():
    for url in ("http://127.0.0.1:8000", "http://localhost:8701", "http://[::1]:80", "http://0.0.0.0:8000"):
        assert "loopback" in loopback_warning(url)
    assert loopback_warning("https://kb.example.org") is None
    assert loopback_warning("http://10.0.0.5:8000") is None


def test_links_follow_the_running_server(kb_env, monkeypatch):
    settings = get_settings()
    assert local_server.running(settings) is None
    assert local_server.public_url(settings) == "http://127.0.0.1:8000"
    local_server.announce("http://127.0.0.1:8701", True, settings)  # this process stands in for `kb serve`
    assert local_server.running(settings)["local_worker"] is True
    assert local_server.public_url(settings) == "http://127.0.0.1:8701"
    monkeypatch.setenv("KB_PUBLIC_URL", "https://kb.example.org")
    get_settings.cache_clear()
    assert local_server.public_url() == "https://kb.example.org"  # an explicit KB_PUBLIC_URL wins
    local_server.withdraw(settings)
    assert local_server.running(settings) is None
