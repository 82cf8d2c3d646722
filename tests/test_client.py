"""The notebook client and `kb render`, against a live `kb serve` in the embedded default (its own local
render worker on the SQLite broker)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from servers import kb_serve

from kb import client as kbc
from kb.client import Client, KBError

README = Path(__file__).parent.parent / "README.md"


def kb(env, *args, timeout=900):
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run([str(exe), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(db_url, inceptionv1, tmp_path_factory):
    """(base URL, environment, server log file) of a `kb serve` with no broker configured."""
    tmp = tmp_path_factory.mktemp("served")
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",
        "KB_DATA_DIR": str(tmp / "data"),
        "KB_STORAGE_DIR": str(tmp / "artifacts"),
        "KB_RENDER_DEVICE": "cpu",
    }
    log = tmp / "serve.log"
    with kb_serve(env, log=log) as base:
        yield base, env, log


def test_inputs_are_a_dataframe_of_five_rows(served):
    base, _, _ = served
    with Client(base) as c:
        n = c.neuron("InceptionV1 4c:447")
        rows = n.inputs(5)
        assert len(rows) == 5
        assert {"key", "weight", "magnitude", "method"} <= set(rows.columns)
        assert list(rows["weight"]) == sorted(rows["weight"], reverse=True)
        assert all(k.startswith("inceptionv1/mixed4b:") for k in rows["key"])
        assert n.key == "inceptionv1/mixed4c:447" and n.pinned_key.startswith("inceptionv1@")
        assert n.url == f"{base}/n/inceptionv1/mixed4c/447"
        assert "inceptionv1/mixed4c:447" in n._repr_html_()
        out = n.outputs(3, sign="negative")
        assert len(out) == 3 and (out["weight"] < 0).all()
        sub = c.subgraph("InceptionV1 4c:447", depth=2, per_node=3)
        assert "inceptionv1/mixed4c:447" in sub.nodes and len(sub.edges) == 3 + 9
        assert set(sub.edges.columns) >= {"source", "target", "weight"}
        with pytest.raises(KBError) as bad:
            c.neuron("InceptionV1 4c:99999")
        assert bad.value.code in ("NOT_FOUND", "BAD_KEY")


def test_without_pandas_tables_are_lists_of_dataclasses(served, monkeypatch):
    base, _, _ = served
    monkeypatch.setattr(kbc, "pd", None)
    rows = Client(base).neuron("InceptionV1 4c:447").inputs(5)
    assert isinstance(rows, list) and len(rows) == 5 and isinstance(rows[0], kbc.Neighbor)
    assert rows[0].key.startswith("inceptionv1/mixed4b:") and rows[0].method == "expanded"


def test_claims_with_tokens(served, accounts):
    base, _, _ = served
    editor = Client(base, token=accounts["editor"]["token"])
    claim = editor.propose_claim(
        "client-made car detector",
        ["InceptionV1 4c:447"],
        kind="feature",
        body="made from a notebook",
        evidence=[{"kind": "FEATURE_VISUALIZATION", "neuron": "InceptionV1 4c:447"}],
    )
    assert claim.key.startswith("claim:") and claim.status == "PROPOSED"
    assert claim.subjects == ["inceptionv1/mixed4c:447"] and claim.author == accounts["editor"]["name"]
    review = Client(base, token=accounts["editor2"]["token"]).review(claim.key, "support", "agreed")
    assert review["verdict"] == "SUPPORT" and review["reviewer"] == accounts["editor2"]["name"]
    about = Client(base).neuron("InceptionV1 4c:447").claims()
    assert claim.key in list(about["key"])
    assert claim.key in list(Client(base).claims(layer="InceptionV1 4c", kind="FEATURE", first=100)["key"])
    assert claim.key in list(Client(base).search("notebook")["key"])
    shown = kb(served[1], "neuron", "InceptionV1 4c:447").stdout  # `kb neuron` lists the claims too
    assert re.search(r"^claims  \d+$", shown, re.M) and re.search(
        rf"^  {claim.key}  PROPOSED .* client-made", shown, re.M
    )
    with pytest.raises(KBError) as anonymous:
        Client(base).propose_claim("x", ["InceptionV1 4c:447"])
    assert anonymous.value.code == "UNAUTHENTICATED"


def test_render_from_the_cli_and_the_client(served, accounts):
    """`kb render --wait` with a server running uses its worker and prints links to it; the client waits
    for the same artifact and shows it inline; `kb neuron` prints the server's URL."""
    base, env, log = served
    r = kb(
        env,
        "render",
        "InceptionV1 4c:447",
        "--kind",
        "FEATURE_VIS",
        "--size",
        "64",
        "--steps",
        "16",
        "--seed",
        "1",
        "--wait",
    )
    assert r.returncode == 0, r.stderr
    assert "for the duration" not in r.stderr  # the server's worker did it
    (line,) = r.stdout.splitlines()
    unit, url = line.split()
    assert unit == "inceptionv1/mixed4c:447" and re.fullmatch(re.escape(base) + r"/artifacts/[0-9a-f]{64}\.png", url)
    assert httpx.get(url, timeout=30).content[:4] == b"\x89PNG"
    renders = Client(base, token=accounts["editor"]["token"]).render(
        "InceptionV1 4c:447", size=64, steps=16, seed=1, timeout=600
    )
    assert [x.status for x in renders] == ["DONE"] and renders[0].url == url  # the same job, not redone
    assert renders[0]._repr_png_()[:4] == b"\x89PNG" and url in renders._repr_html_()
    r = kb(env, "neuron", "InceptionV1 4c:447")
    assert f"url     {base}/n/inceptionv1/mixed4c/447" in r.stdout.splitlines(), r.stdout
    text = log.read_text()
    assert "superuser" not in text and "celery@" not in text and "[queues]" not in text, text
    assert re.search(r"job \d+ FEATURE_VIS inceptionv1/mixed4c:447 done", text), text
    assert text.count("loopback address") == 1


def test_readme_notebook_example(served, accounts):
    """The README's python block, as written, against this server (its render is small)."""
    base, _, _ = served
    (block,) = re.findall(r"### From a notebook\n\n```python\n(.*?)```", README.read_text(), re.S)
    code = block.replace("http://127.0.0.1:8000", base)
    scope = {"token": accounts["editor"]["token"]}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["n"].inputs(5)) == 5
