"""Every GraphQL example in README.md, run in order against a live `kb serve`, so that the README cannot drift
from the schema. The keys a mutation returns replace the README's (circuit:1, claim:1, the job ids) in the
examples after it: on a new database they are the same, here the session database has other claims too."""

import re
from pathlib import Path

import httpx
import sqlalchemy as sa
from servers import kb_serve

from kb.db.render_tables import RenderJob

README = Path(__file__).parent.parent / "README.md"


def operations(text: str) -> list[str]:
    """The top-level operations of a GraphQL block (`{ ... }` or `mutation { ... }`), comments removed."""
    text = re.sub(r"#[^\n\"]*$", "", text, flags=re.M)
    ops, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                head = text[:i].rstrip()
                start = len(head) - len("mutation") if head.endswith("mutation") else i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                ops.append(text[start : i + 1].strip())
    assert depth == 0, "unbalanced braces in a README GraphQL block"
    return ops


def test_readme_graphql_examples_run(db_url, engine, inceptionv1, accounts, tmp_path):
    blocks = re.findall(r"```graphql\n(.*?)```", README.read_text(), re.S)
    ops = [op for block in blocks for op in operations(block)]
    assert len(blocks) >= 3 and len(ops) >= 13, ops
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
    token = {"editor": accounts["editor"]["token"], "reviewer": accounts["moderator"]["token"]}
    keys: dict[str, str] = {}
    render_ids: list[int] = []
    try:
        with kb_serve(env, "--no-render-worker") as base:
            for op in ops:
                for readme_key, real in keys.items():
                    op = op.replace(readme_key, real)
                who = "reviewer" if "reviewClaim" in op else "editor"
                headers = {"authorization": f"Bearer {token[who]}"} if op.startswith("mutation") else {}
                body = httpx.post(f"{base}/graphql", json={"query": op}, headers=headers, timeout=120).json()
                assert not body.get("errors") and body.get("data"), (op, body)
                data = body["data"]
                if "createCircuit" in data:
                    keys['"circuit:1"'] = '"{}"'.format(data["createCircuit"]["key"])
                if "createClaim" in data:
                    key = data["createClaim"]["key"]
                    keys['"claim:1"'], keys['"claim:1@'] = f'"{key}"', f'"{key}@'
                if "requestRender" in data:
                    render_ids = [j["id"] for j in data["requestRender"]]
                    keys["renderJobs(ids: [1, 2])"] = f"renderJobs(ids: {render_ids})"
            assert {'"circuit:1"', '"claim:1"', "renderJobs(ids: [1, 2])"} <= set(keys)
    finally:  # no worker rendered them: leave no queued job for another test's worker to pick up
        t = RenderJob.__table__
        with engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.id.in_(render_ids or [-1]), t.c.status == "QUEUED", t.c.attempts == 0)
                .values(status="FAILED", error="README example, not rendered by the tests")
            )


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
