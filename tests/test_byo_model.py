"""README's "Bring your own model", run as written: its Python blocks write the researcher's module and checkpoint
in a folder of their own, its `kb` lines run there, then its page and its GraphQL neighbour query (the notebook
client's) against `kb serve`. Also: a checkpoint that does not fit is refused in one line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
from servers import kb_serve

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "kb"


def section() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"^### Bring your own model\n(.*?)^##", text, re.S | re.M).group(1)


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), re.S)


def kb(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), *args], cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


def test_bring_your_own_model_as_the_readme_says(db_url, engine, tmp_path):
    code = blocks("python")
    assert len(code) == 3, "the section's Python blocks: the module, the checkpoint, the client"
    module, checkpoint, client = code
    folder = tmp_path / "lab"
    folder.mkdir()
    name = re.search(r"# (\w+\.py), in the folder", module).group(1)
    (folder / name).write_text(module)
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
    python = {**os.environ, **env, "PYTHONPATH": str(folder)}
    subprocess.run([sys.executable, "-c", checkpoint], cwd=folder, env=python, check=True, timeout=300)
    assert (folder / "myresnet.pth").is_file()

    lines = [shlex.split(line, comments=True) for line in blocks("bash")[0].splitlines() if line.strip()]
    assert [words[:2] for words in lines] == [["kb", "import"], ["kb", "neuron"]]
    imported = kb(folder, env, *lines[0][1:])
    assert imported.returncode == 0, imported.stderr
    said = re.search(r"# (\d+) layers, ([\d.]+) M connections", blocks("bash")[0])
    got = re.search(r"(\d+) layers, \d+ units, (\d+) connections", imported.stdout)
    assert got.group(1) == said.group(1), imported.stdout
    assert f"{int(got.group(2)) / 1e6:.1f}" == said.group(2), imported.stdout
    assert "imported myresnet@" in imported.stdout and "module:mynets:resnet18_10" in imported.stdout

    neighbours = kb(folder, env, *lines[1][1:])
    assert neighbours.returncode == 0, neighbours.stderr
    out = neighbours.stdout.splitlines()
    assert out[0] == "myresnet/layer3.1:7"
    assert "top 5 inputs by weight (from layer3.0; expanded)" in neighbours.stdout
    assert sum(1 for line in out if "myresnet/layer3.0:" in line) == 5

    with kb_serve(env, "--no-render-worker") as base:
        page = httpx.get(f"{base}/n/myresnet/layer3.1/7", timeout=60)
        assert page.status_code == 200 and "myresnet/layer3.1:7" in page.text
        table = subprocess.run(
            [sys.executable, "-c", _printing(client.replace("http://127.0.0.1:8000", base))],
            cwd=folder,
            env=python,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("myresnet/layer3.0:") == 5, table.stdout


def _printing(code: str) -> str:
    """The block with its last expression printed, as a notebook shows it."""
    lines = code.rstrip().splitlines()
    last = lines[-1].split("#", 1)[0].rstrip()
    show = "print(_r.to_string() if hasattr(_r, 'to_string') else _r)"  # a DataFrame, or a list without pandas
    return "\n".join([*lines[:-1], f"_r = {last}", show])


def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(db_url, engine, tmp_path):
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "ten.pth")
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
    r = kb(tmp_path, env, "import", "torchvision:resnet18", "--weights", str(tmp_path / "ten.pth"), "--key", "ten")
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "does not fit torchvision:resnet18" in lines[0] and "fc.weight" in lines[0], r.stderr
