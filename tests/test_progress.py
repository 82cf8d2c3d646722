"""Progress on long commands: bars on a terminal, one plain line per phase in a pipe or a log."""

import io
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from kb.cli.main import app
from kb.cli.progress import Phases

ANSI = re.compile(r"\x1b\[")


def test_bars_on_a_terminal_plain_lines_otherwise():
    tty = io.StringIO()
    with Phases(Console(file=tty, force_terminal=True, width=100)) as phases:
        assert phases.bars
        tick = phases.stage("weights a → b", 10)
        for _ in range(10):
            tick(1)
        phases.done("weights a → b")
        phases.line("kept")
    assert ANSI.search(tty.getvalue()) and "━" in tty.getvalue() and "kept" in tty.getvalue()

    pipe = io.StringIO()
    with Phases(Console(file=pipe, force_terminal=False, width=100), plain_every_s=0) as phases:
        assert not phases.bars
        tick = phases.next("weights a → b", 4)
        tick(2)
        phases.next("write a → b", 8)
        phases.next("index and commit")
    lines = pipe.getvalue().splitlines()
    assert lines == ["weights a → b: 4…", "weights a → b: 2/4 (50%)", "write a → b: 8…", "index and commit…"]
    assert not ANSI.search(pipe.getvalue())


def test_import_prints_a_line_per_layer_phase_into_a_pipe(kb_env, engine, tiny_arch):
    runner = CliRunner()
    key = f"tiny-progress-{secrets.token_hex(3)}"
    r = runner.invoke(app, ["import", "test:tiny", "--key", key, "--weights", "random"])
    assert r.exit_code == 0, r.output
    err = r.stderr
    for phase in ("loading weights…", "weights c1 → c2: 2…", "weights c2 → mixed: 2…"):
        assert phase in err.splitlines(), err
    assert err.splitlines()[-1] == "index and commit…"
    assert not ANSI.search(err)
    assert r.stdout.startswith(f"imported {key}@")


def test_families_and_claims_export_show_phases(kb_env, inceptionv1, tmp_path):
    folder = tmp_path / "families"
    folder.mkdir()
    source = f"https://example.org/families-{secrets.token_hex(3)}"
    (folder / "mixed3b.json").write_text(
        '[{"name": "A", "units": [1, 2], "comment": "a"}, {"name": "B", "units": [3]},]'
    )
    (folder / "mixed4a.json").write_text('[{"name": "C", "units": [4]}]')
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, **kb_env}
    r = subprocess.run(
        [str(exe), "import-families", str(folder), "--model", "inceptionv1", "--source", source],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["families mixed3b: 2…", "families mixed4a: 1…"]
    assert "3 families imported" in r.stdout
    r = subprocess.run(
        [str(exe), "claims", "export", "-o", str(tmp_path / "c.jsonl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and r.stderr.splitlines()[0] == "exporting claims…", r.stderr


def test_dataset_add_reads_headers_and_warns_about_unreadable_files(kb_env, engine, tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(app, ["dataset", "add", f"d-{secrets.token_hex(3)}", str(tmp_path / "imgs")])
    assert r.exit_code == 0, r.output
    assert "reading image headers: 4…" in r.stderr
    assert "warning: 1 of 4 files are not readable images" in r.stderr
