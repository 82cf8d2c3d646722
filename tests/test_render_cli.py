"""`kb render` in the embedded default with no server running: it starts a local worker for the duration,
shows plain progress lines into a pipe, prints each artifact's URL and exits non-zero if any render failed."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from kb.render.storage import storage_from_settings
from kb.settings import Settings

ANSI = re.compile(r"\x1b\[")


def kb(env, *args, timeout=900):
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run([str(exe), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def embedded(db_url, inceptionv1, tmp_path):
    return {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(tmp_path / "artifacts"),
        "KB_RENDER_DEVICE": "cpu",
    }


def test_kb_render_wait_prints_the_artifact_url(embedded, tmp_path):
    r = kb(embedded, "render", "InceptionV1 4c:447", "--kind", "FEATURE_VIS", "--size", "64", "--steps", "16", "--wait")
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()  # stdout: the URLs only (the worker's own output goes to stderr)
    unit, url = line.split()
    assert unit == "inceptionv1/mixed4c:447"
    sha = re.fullmatch(r"http://127\.0\.0\.1:8000/artifacts/([0-9a-f]{64})\.png", url).group(1)
    settings = Settings(database_url=embedded["KB_DATABASE_URL"], storage_dir=embedded["KB_STORAGE_DIR"])
    assert storage_from_settings(settings).exists(sha, ".png")  # in the store the default picks for the database
    assert "a local render worker" in r.stderr and re.search(r"^rendering: .*1 done$", r.stderr, re.M), r.stderr
    assert not ANSI.search(r.stderr)
    # asked again: the same job and artifact, at once, without --wait and without a worker
    again = kb(embedded, "render", "inceptionv1/mixed4c:447", "--kind", "feature_vis", "--size", "64", "--steps", "16")
    assert again.returncode == 0 and again.stdout == r.stdout, again.stderr
    assert "0 sent, 1 already asked for" in again.stderr


def test_kb_render_fails_with_exit_1(embedded, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "broken.png").write_bytes(b"\x89PNG but not really")
    name = f"junk-{secrets.token_hex(3)}"
    assert kb(embedded, "dataset", "add", name, str(junk)).returncode == 0
    r = kb(embedded, "render", "InceptionV1 3a:0", "--kind", "DATASET_EXAMPLES", "--dataset", name, "--wait")
    assert r.returncode == 1
    assert "inceptionv1/mixed3a:0  FAILED" in r.stdout and "no readable images" in r.stdout
    assert r.stderr.splitlines()[-1] == "error: 1 of 1 renders failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["InceptionV1 4c:447", "--kind", "PAINTING"], "error: --kind must be one of FEATURE_VIS"),
        (["InceptionV1 4c:447", "--kind", "FEATURE_VIS", "--size", "8"], "error: size must be 16..512 pixels"),
        (["--kind", "FEATURE_VIS"], "error: name neuron keys or --layer"),
        (["InceptionV1 4c:9999", "--kind", "FEATURE_VIS"], "error: "),
        (["InceptionV1 3a:0", "--kind", "DATASET_EXAMPLES", "--dataset", "nope"], "error: no dataset 'nope'"),
    ],
)
def test_kb_render_bad_input_is_one_line(embedded, args, message):
    r = kb(embedded, "render", *args)
    assert r.returncode == 1 and r.stderr.startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr
