"""README.md's examples, run as written and in order on a new database, so that the README cannot drift from the
code: every `kb ...` line of its bash blocks (but those in SKIP, each with its reason) and every GraphQL operation,
against the `kb serve` that the README starts where it starts one.

A mutation goes with the token of the account named beside it ("with bo's token"), else with the first account
the README makes; the keys the mutations answer with (circuit, claim, render job ids) replace the README's in the
examples after them. The commands run from a folder laid out as a clone's root, so that the README's relative
paths (the shipped families data) resolve and the files they write stay in the test's folder."""

import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa
from conftest import ADMIN_URL, BACKEND
from servers import kb_serve

from kb.db import migrate
from kb.db.engine import make_engine

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
EXE = Path(sys.executable).parent / "kb"

# README lines not run here (matched by their start), each with the reason; a line listed must still be there.
SKIP = {
    "kb import torchvision:googlenet": "downloads torchvision's weights",
    "kb import torchvision:resnet50 --weights ./resnet50.pth": "needs the reader's own checkpoint",
    "kb models remove resnet50-mine": "removes the model of the line above",
    "kb render ": "renders on a worker: tests/test_render_cli.py runs it",
    "kb import module:mynets:resnet18_10": "needs the section's files: tests/test_byo_model.py runs that section",
    "kb neuron myresnet/": "of the model of the line above",
}


def operations(text: str) -> list[tuple[str, str]]:
    """The top-level operations of a GraphQL block (`{ ... }` or `mutation { ... }`), comments removed, each with
    the comments on its lines."""
    ops: list[tuple[str, str]] = []
    body, notes, depth, start = "", "", 0, None
    for line in text.splitlines():
        comment = re.search(r"#[^\n\"]*$", line)
        if comment:
            line = line[: comment.start()]
        if depth or start is not None:
            notes += comment.group() if comment else ""
        for ch in line:
            if ch == "{":
                if depth == 0:
                    head = body.rstrip()
                    start = len(head) - len("mutation") if head.endswith("mutation") else len(body)
                    notes = comment.group() if comment else ""
                depth += 1
            elif ch == "}":
                depth -= 1
            body += ch
            if ch == "}" and depth == 0:
                ops.append((body[start:].strip(), notes))
                body, start = "", None
        body += "\n"
    assert depth == 0, "unbalanced braces in a README GraphQL block"
    return ops


def examples(text: str) -> Iterator[tuple[str, str, object]]:
    """In the README's order: ("bash", line, [argv, ...]) for each line of a bash block that runs `kb` (its
    commands split at `&&`), and ("graphql", operation, comments) for each GraphQL operation."""
    for block in re.finditer(r"```(bash|graphql)\n(.*?)```", text, re.S):
        if block.group(1) == "graphql":
            for op, notes in operations(block.group(2)):
                yield "graphql", op, notes
            continue
        for line in block.group(2).replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] != ["kb"]:
                continue
            commands: list[list[str]] = [[]]
            for word in words:
                if word == "&&":
                    commands.append([])
                else:
                    commands[-1].append(word)
            yield "bash", " && ".join(shlex.join(c) for c in commands), commands


@contextmanager
def new_database(folder: Path, name: str) -> Iterator[str]:
    """The URL of a database with no rows (migrated on PostgreSQL, where that is an explicit step; the embedded
    SQLite upgrades itself), dropped afterwards."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{folder / name}.sqlite"
        return
    db = f"kb_test_{name}_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
    try:
        url = sa.engine.make_url(ADMIN_URL).set(database=db).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.dispose()


def test_readme_examples_run_in_order_on_a_new_database(tmp_path):
    steps = list(examples(README.read_text()))
    lines = [text for kind, text, _ in steps if kind == "bash"]
    for start in SKIP:
        assert any(line.startswith(start) for line in lines), f"SKIP lists {start!r}, which the README lost"
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "kb").symlink_to(REPO / "kb")  # a clone's root: its kb/ (the shipped data) and nothing else
    tokens: dict[str, str] = {}  # account name -> token, from `kb token create NAME` as the README runs it
    keys: dict[str, str] = {}  # README's key -> the one the answer gave
    ran: list[str] = []  # the commands run, as written
    with (
        new_database(tmp_path, "readme") as url,
        new_database(tmp_path, "empty") as empty,
        new_database(tmp_path, "restored") as restored,
        ExitStack() as stack,
    ):
        env = {"KB_DATABASE_URL": url, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
        base = None
        for kind, text, extra in steps:
            if kind == "bash":
                if any(text.startswith(start) for start in SKIP):
                    continue
                for argv in extra:
                    args = argv[1:]
                    if args[0] == "serve":  # on a free port, not the README's; the render jobs are not run
                        port = args.index("--port") if "--port" in args else None
                        rest = args[1:port] + args[port + 2 :] if port else args[1:]
                        base = stack.enter_context(kb_serve(env, *rest, "--no-render-worker"))
                        continue
                    # the README imports claims "into a database with no claims yet": a second new one
                    where = {**env, "KB_DATABASE_URL": empty} if args[:2] == ["claims", "import"] else env
                    if args[0] == "restore":  # "refused if the database holds data": a backup goes to a new one
                        where = {**env, "KB_DATABASE_URL": restored}
                    r = subprocess.run(
                        [str(EXE), *args],
                        cwd=clone,
                        env={**os.environ, **where},
                        input="correct horse battery staple\n",  # `kb user password` reads one line
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                    assert r.returncode == 0, (text, r.stdout, r.stderr)
                    if args[:2] == ["token", "create"]:
                        tokens[args[2]] = r.stdout.strip()
                    ran.append(shlex.join(argv))
                continue
            op = text
            for readme_key, real in keys.items():
                op = op.replace(readme_key, real)
            assert base, f"a GraphQL example before the README starts `kb serve`: {op}"
            headers = {}
            if op.startswith("mutation"):
                named = re.search(r"with (\w+)'s token", extra)
                assert tokens, f"a mutation before the README makes an account: {op}"
                token = tokens[named.group(1)] if named else next(iter(tokens.values()))
                headers = {"authorization": f"Bearer {token}"}
            body = httpx.post(f"{base}/graphql", json={"query": op}, headers=headers, timeout=120).json()
            assert not body.get("errors") and body.get("data"), (op, body)
            data = body["data"]
            if "createCircuit" in data:
                key = data["createCircuit"]["key"]
                keys['"circuit:1"'], keys['"circuit:1@'] = f'"{key}"', f'"{key}@'
            if "createClaim" in data:
                key = data["createClaim"]["key"]
                keys['"claim:1"'], keys['"claim:1@'] = f'"{key}"', f'"{key}@'
            if "requestRender" in data:
                ids = [j["id"] for j in data["requestRender"]]
                keys["renderJobs(ids: [1, 2])"] = f"renderJobs(ids: {ids})"
    # What the README says of a new database: these are the keys the answers gave.
    assert keys == {
        '"circuit:1"': '"circuit:1"',
        '"circuit:1@': '"circuit:1@',
        '"claim:1"': '"claim:1"',
        '"claim:1@': '"claim:1@',
        "renderJobs(ids: [1, 2])": "renderJobs(ids: [1, 2])",
    }
    assert len(tokens) >= 2, tokens  # the author and the reviewer
    for command in (
        "kb import lucent:inceptionv1 --weights random",
        "kb import-families kb/data/distill-early-vision",
        "kb claims export",
        "kb claims import",
        "kb backup",
        "kb restore",
        "kb user password",
    ):
        assert any(line.startswith(command) for line in ran), (command, ran)


def test_ci_runs_the_readmes_test_command():
    """The code block under README's "## Tests" is the test command, and so is the second line of the README's
    first code block (the quick start); .ci/run ends with that command."""
    text = README.read_text()
    section = re.search(r"^## Tests\n(.*?)^## ", text, re.S | re.M).group(1)
    test_command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    quick_start = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert test_command == "bin/test"
    assert quick_start[1] == test_command
    assert [line for line in ci if line and not line.startswith("#")][-1] == test_command
