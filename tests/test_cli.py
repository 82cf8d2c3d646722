"""The ``kb`` command: the README's scenario end to end, and one clear line for every bad input."""

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from conftest import ADMIN_URL, BACKEND
from typer.testing import CliRunner

from kb.cli.main import app
from kb.db.engine import make_engine
from kb.settings import get_settings

runner = CliRunner()


def kb(env, *args):
    """The installed console script, as a researcher runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "kb")
    return subprocess.run([exe, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_readme_scenario_inceptionv1(kb_env, inceptionv1):
    r = inceptionv1  # `kb import lucent:inceptionv1 --weights random --seed 0`, run once per session
    assert "12 layers, 5804 units, 3208320 connections" in r.stdout
    r = kb(kb_env, "neuron", "InceptionV1 4c:447", "--inputs", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "inceptionv1/mixed4c:447"
    assert lines[1].startswith("pinned  inceptionv1@") and lines[1].endswith("/mixed4c:447")
    inputs = [x for x in lines if x.strip().endswith(tuple(f":{i}" for i in range(512))) and "mixed4b" in x]
    assert len(inputs) == 5
    weights = [float(x.split()[0]) for x in inputs]
    assert weights == sorted(weights, reverse=True)
    # every accepted form gives the same neuron
    pinned = lines[1].split()[1]
    for form in ("models/inceptionv1/mixed4c_0/447", pinned, "inceptionv1/mixed4c:447"):
        r = kb(kb_env, "neuron", form)
        assert r.returncode == 0 and r.stdout.splitlines()[0] == "inceptionv1/mixed4c:447", (form, r.stderr)
    r = kb(kb_env, "neuron", "mixed4c:447", "--model", "inceptionv1", "--outputs", "3")
    assert r.returncode == 0 and "top 3 outputs by weight (from mixed4d" in r.stdout
    # the same weights again change nothing; other weights under the key are refused
    r = kb(kb_env, "import", "lucent:inceptionv1", "--weights", "random", "--seed", "0")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = kb(kb_env, "import", "lucent:inceptionv1", "--weights", "random", "--seed", "1")
    *phases, error = r.stderr.strip().splitlines()  # progress lines (into a pipe: one per phase), then the error
    assert r.returncode == 1 and error.startswith("error: model key 'inceptionv1' is taken")
    assert phases == ["loading weights…"]


def test_unknown_neuron_suggests_and_exits_1(kb_env, engine, tiny_arch):
    r = runner.invoke(app, ["import", "test:tiny", "--key", "tiny-cli", "--weights", "random"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["neuron", "tiny-cli/mixd:1"])
    assert r.exit_code == 1
    assert "did you mean tiny-cli/mixed?" in r.output
    r = runner.invoke(app, ["neuron", "tiny-cli/mixed:9"])
    assert r.exit_code == 1 and "has 2 units" in r.output
    r = runner.invoke(app, ["neuron", "tiny-cli/c2:1", "--inputs", "2"])
    assert r.exit_code == 0 and "+22.5000" in r.output
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "tiny-cli@" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["import", "torchvision:nonet"], "unknown torchvision classification model 'torchvision:nonet'"),
        (["import", "nonet:x"], "unknown architecture 'nonet:x'"),
        (
            ["import", "torchvision:resnet18", "--layers", "layer1,layr2.0"],
            "no module 'layr2.0' in this model; nearest",
        ),
        (["import", "torchvision:resnet18", "--input-shape", "64x64"], "expected CHANNELS,HEIGHT,WIDTH"),
        (["import", "torchvision:resnet50", "--layers", "layer1.*"], "declared in the zoo"),
        (["import", "module:no_such_lab.nets:build"], "cannot import no_such_lab.nets"),
        (["import", "lucent:inceptionv1", "--key", "Not A Key"], "is not valid"),
        (
            ["import", "torchvision:alexnet", "--weights", "/no/such/file.pt"],
            "checkpoint /no/such/file.pt does not exist",
        ),
        (["import", "torchvision:alexnet", "--weights", "IMAGENET1K_V9"], "no weights 'IMAGENET1K_V9'"),
        (["import", "lucent:inceptionv1", "--weights", "IMAGENET1K_V1"], "no weights 'IMAGENET1K_V1'"),
        (["neuron", "not a key at all"], "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(kb_env, args, message):
    r = kb(kb_env, *args)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and message in r.stderr


def test_offline_weights_are_a_clear_error(kb_env, tmp_path):
    r = kb({**kb_env, "TORCH_HOME": str(tmp_path / "torch")}, "import", "torchvision:alexnet", "--key", "alex-offline")
    assert r.returncode == 1
    assert "cannot fetch weights 'DEFAULT' for torchvision:alexnet" in r.stderr and "--weights random" in r.stderr


def test_timm_hub_weights_offline_are_a_clear_error(kb_env, tmp_path):
    """timm's pretrained weights come from the Hugging Face hub as timm loads them: offline, one line."""
    env = {**kb_env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = kb(env, "import", "timm:resnet10t", "--weights", "hub", "--key", "timm-offline")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot fetch timm's weights for resnet10t") and "--weights random" in last


def test_schema_must_be_current(tmp_path, monkeypatch):
    if BACKEND == "sqlite":  # the embedded default upgrades itself
        url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        expect_code = 0
    else:  # a shared PostgreSQL is upgraded as an explicit step
        name = f"kb_fresh_{os.getpid()}"
        admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        expect_code = 1
    monkeypatch.setenv("KB_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        r = runner.invoke(app, ["models"])
        assert r.exit_code == expect_code, r.output
        if expect_code:
            assert "run `kb db upgrade`" in r.output
            assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
            assert runner.invoke(app, ["models"]).exit_code == 0
    finally:
        get_settings.cache_clear()
        if BACKEND != "sqlite":
            from kb.db.engine import engine_for

            engine_for(url).dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
