"""docker-compose.yml and the Dockerfile, checked without Docker (there is none here): the services the README's
deployment names, every KB_* variable a setting that exists, and every `kb` command one the CLI parses (its
options included: an option renamed in the CLI fails here, not on a deployment)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.exceptions import TyperException

from kb.cli.main import app
from kb.settings import Settings

pytestmark = pytest.mark.database_free

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _dockerfile_cmds() -> dict[str, list[str]]:
    """{build target: its CMD} of the Dockerfile's stages."""
    cmds: dict[str, list[str]] = {}
    stage = None
    for line in DOCKERFILE.splitlines():
        if m := re.match(r"FROM \S+ AS (\w+)", line):
            stage = m.group(1)
        elif (m := re.match(r"CMD (\[.*\])", line)) and stage:
            cmds[stage] = yaml.safe_load(m.group(1))
    return cmds


def _parses(argv: list[str]) -> None:
    """`kb ARGV...` resolved down to its command and its options parsed, without running it."""
    assert argv[0] == "kb", argv
    command = typer.main.get_command(app)  # typer's own (vendored) click objects
    args, name = argv[1:], "kb"
    while hasattr(command, "get_command"):  # a group: kb's take no options of their own before a command
        assert args, f"{shlex.join(argv)} names no command of {name}"
        sub = command.get_command(command.make_context(name, [], resilient_parsing=True), args[0])
        assert sub is not None, f"kb has no command {args[0]!r}: {shlex.join(argv)}"
        command, name, args = sub, args[0], args[1:]
    command.make_context(name, list(args))  # unknown options and bad values raise here


def test_the_services_of_the_deployment():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    for name in ("migrate", "api", "worker"):
        assert services[name]["build"]["target"] in _dockerfile_cmds(), name


def test_every_kb_variable_is_a_setting():
    fields = {f"KB_{name.upper()}" for name in Settings.model_fields}
    env: dict[str, str] = {}
    for service in COMPOSE["services"].values():
        env |= {k: str(v) for k, v in (service.get("environment") or {}).items()}
    named = {k for k in env if k.startswith("KB_")}
    assert named, "the services set no KB_ variable"
    assert named <= fields, sorted(named - fields)
    Settings(**{k.removeprefix("KB_").lower(): v for k, v in env.items() if k in named})  # and each value is valid


def test_every_kb_command_parses():
    commands = [s["command"] for s in COMPOSE["services"].values() if s.get("command", [""])[0] == "kb"]
    commands += [c for c in _dockerfile_cmds().values() if c[0] == "kb"]
    assert len(commands) >= 4, commands
    for argv in commands:
        _parses(argv)


def test_a_wrong_command_or_option_fails_the_check():
    with pytest.raises(AssertionError, match="no command"):
        _parses(["kb", "wroker"])
    with pytest.raises(TyperException, match="No such option"):
        _parses(["kb", "worker", "--queue", "render"])
    with pytest.raises(TyperException, match="No such option"):
        _parses(["kb", "db", "upgrade", "--no-such-flag"])
