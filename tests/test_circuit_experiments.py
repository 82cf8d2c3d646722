"""Circuits checked by experiment (kb.experiments): the measurement on a network whose answers are known, for
every ablation, and the check as a job of the render queue (checkCircuit, its worker, Circuit.experiments,
idempotence, cancel), on both databases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import known_circuit as K
import pytest
import sqlalchemy as sa
from conftest import as_user, gql

from kb.experiments import measure

ABLATIONS = ("zero", "mean", "resample")


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_the_known_circuit_is_sufficient_and_necessary_and_its_complement_is_neither(ablation):
    model, x = K.KnownAnswer(), K.images()
    [ab] = measure.check(model, model.inputs, model.out, x, {0: [0, 1]}, ablation)
    [c] = measure.check(model, model.inputs, model.out, x, {0: [2]}, ablation)
    assert ab["m_full"] != pytest.approx(ab["m_empty"])
    assert ab["sufficiency"] == pytest.approx(1.0, abs=1e-6)
    assert ab["necessity"] == pytest.approx(1.0, abs=1e-6)
    assert c["sufficiency"] == pytest.approx(0.0, abs=1e-6)
    assert c["necessity"] == pytest.approx(0.0, abs=1e-6)
    assert ab["m_full"] == pytest.approx(c["m_full"]) and ab["m_empty"] == pytest.approx(c["m_empty"])
    for figures in (ab, c):
        rnd = figures["random"]
        assert len(rnd["sets"]) == 10 and rnd["sufficiency"]["draws"] == 10
        assert all(len(s) == len(figures["sources"]) for s in rnd["sets"])
        assert rnd["sufficiency"]["std"] >= 0


def test_zero_ablation_figures_worked_out_by_hand():
    """m(M) = E[ReLU(2 x0)] > 0, m(∅) = ReLU(0) = 0; without a the unit is ReLU(x0): half of it (effect 0.5)."""
    model, x = K.KnownAnswer(), K.images()
    [f] = measure.check(model, model.inputs, model.out, x, {0: [0, 1]}, "zero")
    expected = torch_relu_mean(2 * x[:, 0])
    assert f["m_full"] == pytest.approx(expected, rel=1e-5)
    assert f["m_empty"] == 0.0
    assert [e["effect"] for e in f["edges"]] == pytest.approx([0.5, 0.5], abs=1e-6)


def torch_relu_mean(t) -> float:
    return float(t.clamp(min=0).mean())


def test_the_same_seed_gives_the_same_figures_and_targets_share_their_conditions():
    model, x = K.KnownAnswer(), K.images()
    one = measure.check(model, model.inputs, model.out, x, {0: [0, 1], 1: [2]}, "resample", seed=3)
    again = measure.check(model, model.inputs, model.out, x, {0: [0, 1], 1: [2]}, "resample", seed=3)
    assert one == again
    t0, t1 = one
    assert (t0["target"], t1["target"]) == (0, 1)
    assert t1["sufficiency"] == pytest.approx(1.0) and t1["necessity"] == pytest.approx(1.0)


def test_a_pass_stops_at_the_target_layer():
    """The layer after the target (``head``) never runs while a check measures."""
    model, x = K.KnownAnswer(), K.images(8)
    ran = []
    handle = model.head.register_forward_hook(lambda *a: ran.append(1))
    try:
        measure.check(model, model.inputs, model.out, x, {0: [0, 1]}, "mean")
    finally:
        handle.remove()
    assert ran == []


def test_resample_sends_no_image_to_itself():
    acts = K.images(16)
    repl = measure.replacements(acts, "resample", seed=0)
    for c in range(acts.shape[1]):
        for i in range(len(acts)):
            assert not bool((repl[i, c] == acts[i, c]).all())


# -- the check as a job: the API, the job table, the worker's code, the experiment row ---------------------------

CHECK = """mutation($k: String!, $d: String!, $a: Ablation!, $n: Int!) {
  checkCircuit(key: $k, dataset: $d, ablation: $a, images: $n) { id kind status lane } }"""
EXPERIMENTS = """query($k: String!) { circuit(key: $k) { revision experiments { key circuitKey olderRevision dataset
  ablation images draws reduction pinnedHash modelSha256 versions
  targets { target sources sufficiency necessity mFull mEmpty randomSufficiency { mean std draws }
            edges { source effect } badges sufficiencyBeatsRandom necessityBeatsRandom } } } }"""
JOB = "query($i: [Int!]!) { renderJobs(ids: $i) { id status progress error experiment { key } } }"


@pytest.fixture(scope="module")
def known(api, engine, tmp_path_factory):
    """test:known imported as model ``known``, and 48 noise images registered as data set ``noise``."""
    from kb.app.model_import import import_model
    from kb.db.render_tables import dataset_table
    from kb.db.tables import model_table, utcnow

    K.register()
    with engine.connect() as conn:
        there = conn.execute(sa.select(model_table.c.id).where(model_table.c.key == "known")).first()
    if there is None:
        import_model(engine, "test:known", key="known", weights="random")
    api.app.state.graphs.catalog(refresh=True)
    folder = tmp_path_factory.mktemp("noise")
    K.write_pngs(folder)
    with engine.begin() as conn:
        if not conn.execute(sa.select(dataset_table.c.id).where(dataset_table.c.name == "noise")).first():
            conn.execute(
                sa.insert(dataset_table).values(name="noise", path=str(folder), images=48, created_at=utcnow())
            )
    return "known"


def _circuit(api, token, edges) -> str:
    made = as_user(
        api,
        token,
        "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }",
        {"i": {"name": "relu(a+b)", "edges": [{"source": s, "target": t} for s, t in edges]}},
    )
    assert "errors" not in made, made
    return made["data"]["createCircuit"]["key"]


def _work(db_url: str, job_id: int) -> None:
    """What a worker does with the job's message (kb.render.tasks.render_jobs calls this), in this process, where
    the hand-built architecture is registered."""
    from kb.render import runner
    from kb.settings import Settings

    runner.run([job_id], worker="test", settings=Settings(database_url=db_url, render_device="cpu"))


@pytest.mark.parametrize("ablation", ["ZERO", "MEAN", "RESAMPLE"])
def test_check_circuit_measures_the_known_circuit_as_a_job(api, accounts, db_url, known, ablation):
    token = accounts["editor"]["token"]
    key = _circuit(api, token, [("known/inputs:0", "known/out:0"), ("known/inputs:1", "known/out:0")])
    asked = as_user(api, token, CHECK, {"k": key, "d": "noise", "a": ablation, "n": 32})
    assert "errors" not in asked, asked
    job = asked["data"]["checkCircuit"]
    assert (job["kind"], job["status"], job["lane"]) == ("CIRCUIT_CHECK", "QUEUED", "BULK")
    again = as_user(api, token, CHECK, {"k": key, "d": "noise", "a": ablation, "n": 32})["data"]["checkCircuit"]
    assert again["id"] == job["id"]  # the same circuit revision and parameters: the same job
    _work(db_url, job["id"])
    [done] = gql(api, JOB, {"i": [job["id"]]})["data"]["renderJobs"]
    assert done["status"] == "DONE" and done["progress"] == 1.0, done
    circuit = gql(api, EXPERIMENTS, {"k": key})["data"]["circuit"]
    [exp] = circuit["experiments"]
    assert exp["key"] == done["experiment"]["key"]
    assert exp["circuitKey"] == f"{key}@1" and exp["olderRevision"] is False
    assert (exp["dataset"], exp["ablation"], exp["images"], exp["draws"], exp["reduction"]) == (
        "noise",
        ablation,
        32,
        10,
        "mean",
    )
    assert exp["modelSha256"].startswith(exp["pinnedHash"]) and '"torch"' in exp["versions"]
    [t] = exp["targets"]
    assert t["target"] == "known/out:0" and t["sources"] == ["known/inputs:0", "known/inputs:1"]
    assert t["sufficiency"] == pytest.approx(1.0, abs=1e-6) and t["necessity"] == pytest.approx(1.0, abs=1e-6)
    assert t["randomSufficiency"]["draws"] == 10
    assert t["badges"][:2] == ["sufficiency 1.00", "necessity 1.00"]
    assert t["badges"][3:] == [f"{ablation.lower()} ablation", "32 images of noise"]
    again = as_user(api, token, CHECK, {"k": key, "d": "noise", "a": ablation, "n": 32})["data"]["checkCircuit"]
    assert (again["id"], again["status"]) == (job["id"], "DONE")  # asked again: the finished job, not redone
    page = api.get(f"/circuits/{key.split(':')[1]}")
    assert page.status_code == 200, page.text[-3000:]
    assert "sufficiency 1.00" in page.text and f"{ablation.lower()} ablation" in page.text
    assert "ablated at its layer" in page.text


def test_a_check_of_an_older_revision_is_marked_and_the_complement_measures_zero(api, accounts, db_url, known):
    token = accounts["editor"]["token"]
    key = _circuit(api, token, [("known/inputs:2", "known/out:0")])
    job = as_user(api, token, CHECK, {"k": key, "d": "noise", "a": "MEAN", "n": 16})["data"]["checkCircuit"]
    _work(db_url, job["id"])
    edited = as_user(
        api,
        token,
        'mutation($k: String!) { updateCircuit(key: $k, expectedRevision: 1, patch: {name: "c only"}) { revision } }',
        {"k": key},
    )
    assert edited["data"]["updateCircuit"]["revision"] == 2
    [exp] = gql(api, EXPERIMENTS, {"k": key})["data"]["circuit"]["experiments"]
    assert exp["circuitKey"] == f"{key}@1" and exp["olderRevision"] is True
    [t] = exp["targets"]
    assert t["sufficiency"] == pytest.approx(0.0, abs=1e-6) and t["necessity"] == pytest.approx(0.0, abs=1e-6)
    assert (t["sufficiencyBeatsRandom"], t["necessityBeatsRandom"]) == (False, False)
    page = api.get(f"/circuits/{key.split(':')[1]}").text
    assert '<span class="tag weak"' in page and "sufficiency 0.00 (not above random)" in page
    got = gql(api, '{ experiment(key: "%s") { circuitKey } }' % exp["key"])  # noqa: UP031
    assert got["data"]["experiment"]["circuitKey"] == f"{key}@1"


def test_a_queued_check_is_cancelled_and_bad_requests_are_coded(api, accounts, db_url, known):
    token = accounts["editor"]["token"]
    key = _circuit(api, token, [("known/inputs:0", "known/out:0")])
    job = as_user(api, token, CHECK, {"k": key, "d": "noise", "a": "ZERO", "n": 8})["data"]["checkCircuit"]
    cancelled = as_user(api, token, "mutation($i: [Int!]!) { cancelRenders(ids: $i) { status } }", {"i": [job["id"]]})
    assert cancelled["data"]["cancelRenders"] == [{"status": "CANCELLED"}]
    _work(db_url, job["id"])  # a message that arrives after the cancel runs nothing
    [ended] = gql(api, JOB, {"i": [job["id"]]})["data"]["renderJobs"]
    assert ended["status"] == "CANCELLED" and ended["experiment"] is None
    for variables, code in (
        ({"k": key, "d": "no-such-set", "a": "ZERO", "n": 8}, "NOT_FOUND"),
        ({"k": key, "d": "noise", "a": "ZERO", "n": 49}, "BAD_INPUT"),
        ({"k": key, "d": "noise", "a": "ZERO", "n": 1}, "BAD_INPUT"),
        ({"k": "circuit:999999", "d": "noise", "a": "ZERO", "n": 8}, "NOT_FOUND"),
        ({"k": "circuit:x", "d": "noise", "a": "ZERO", "n": 8}, "BAD_INPUT"),
    ):
        answer = as_user(api, token, CHECK, variables)
        assert answer["errors"][0]["extensions"]["code"] == code, (variables, answer)
    anonymous = as_user(api, None, CHECK, {"k": key, "d": "noise", "a": "ZERO", "n": 8})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("source", "target", "units"),
    [("mixed4b", "mixed4c", [3, 130, 447]), ("mixed3b", "mixed4a", [10]), ("conv2d1", "conv2d2", [5, 100])],
)
def test_narrowing_to_the_measured_units_changes_none_of_them(source, target, units):
    """InceptionV1 (seeded random weights): with the branches that make none of the units skipped and the last
    convolutions sliced to their channels (kb.experiments.narrow), the units' maps are the same, bit for bit."""
    import torch

    from kb.experiments import narrow
    from kb.graph import zoo
    from kb.graph.weights import load
    from kb.render.model_cache import prepare

    arch = zoo.get("lucent:inceptionv1")
    model = prepare(load(arch, "random", 0)[0], "cpu")
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 255 - 117
    src, tgt = model.get_submodule(source), model.get_submodule(target)
    acts = measure.source_activations(model, src, x, 2)
    probe = measure.small_probe(model, src, x[:1])
    assert probe.shape[-1] < 224
    own = {id(m) for m in model.modules() if "forward" in vars(m)}  # lucent's redirected ReLUs (the adapter's)
    with torch.no_grad():
        whole = measure._downstream(model, src, tgt, probe, acts)
        _skip, slices = narrow.plan(model, arch, target, units)
        assert slices
        with narrow.narrowed(model, arch, target, units, lambda m: measure._downstream(m, src, tgt, probe, acts[:1])):
            narrowed = measure._downstream(model, src, tgt, probe, acts)
    assert torch.equal(whole[:, units], narrowed[:, units])
    assert {id(m) for m in model.modules() if "forward" in vars(m)} == own  # every patch removed


# -- the trained model organism: demo:digits ----------------------------------------------------------------------

INPUTS = """query($k: String!) { neuron(key: $k) { inputs(first: 4, orderBy: WEIGHT) { edges { node { key } } } } }"""


def test_a_digits_units_top_inputs_beat_random_circuits_by_two_standard_deviations(
    api, accounts, db_url, digits_import, digits_model
):
    """demo:digits, trained: the circuit of a conv3 unit's four strongest inputs (by weight) in conv2, checked by
    mean ablation on 256 of the digits, is more sufficient than random circuits of four conv2 units by more than 2
    standard deviations of theirs. The unit: conv3's most active on the digits (a silent unit measures nothing).
    Four, not three: on the five most active units (seed 0, inputs ranked by their kernels' sums), the top three
    were 2.2-3.0 standard deviations above the random mean, a thin margin over 2; the top four 3.0-6.1."""
    import torch

    with torch.no_grad():
        m = digits_model.model
        acts = m.relu3(m.conv3(m.pool2(m.relu2(m.conv2(m.pool1(m.relu1(m.conv1(digits_model.images[:256]))))))))
    unit = int(acts.mean((0, 2, 3)).argmax())
    api.app.state.graphs.catalog(refresh=True)
    token = accounts["editor"]["token"]
    target = f"digits/conv3:{unit}"
    inputs = gql(api, INPUTS, {"k": target})["data"]["neuron"]["inputs"]["edges"]
    key = _circuit(api, token, [(e["node"]["key"], target) for e in inputs])
    job = as_user(api, token, CHECK, {"k": key, "d": "digits", "a": "MEAN", "n": 256})["data"]["checkCircuit"]
    _work(db_url, job["id"])
    [exp] = gql(api, EXPERIMENTS, {"k": key})["data"]["circuit"]["experiments"]
    [t] = exp["targets"]
    rnd = t["randomSufficiency"]
    assert t["mFull"] > t["mEmpty"], t
    assert len(inputs) == 4 and t["sufficiency"] > rnd["mean"] + 2 * rnd["std"], t
    assert t["sufficiencyBeatsRandom"] is True
    print(target, t["badges"], f"{(t['sufficiency'] - rnd['mean']) / rnd['std']:.1f} standard deviations")

    # the CLI asks through the same function: the same parameters are the same job, done, and its figures
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_RENDER_DEVICE": "cpu"}
    r = _kb(env, "circuit", "check", key, "--dataset", "digits", "--images", "256")
    assert r.returncode == 0, r.stderr
    assert f"job {job['id']} (bulk lane)" in r.stderr and ": done" in r.stderr
    head, line = r.stdout.splitlines()
    assert head.startswith(f"{exp['key']} of {key}@1  http") and head.endswith(f"/circuits/{key[8:]}#experiments")
    assert line == f"{target}  {' · '.join(t['badges'])}  (above random)"
    # new parameters with --wait: a local worker for the duration measures them
    r = _kb(env, "circuit", "check", key, "--dataset", "digits", "--images", "16", "--ablation", "ZERO", "--wait")
    assert r.returncode == 0, r.stderr
    assert "a local worker" in r.stderr and re.search(r"^checking: .*1 done$", r.stderr, re.M), r.stderr
    assert re.fullmatch(
        rf"{target}  sufficiency \S+ · necessity \S+ · random .* · zero ablation · 16 images of digits  \(.*\)",
        r.stdout.splitlines()[1],
    ), r.stdout
    for args, message in (
        (("circuit:999999",), "error: no circuit:999999"),
        ((key, "--ablation", "half"), "error: ablation must be one of ZERO, MEAN, RESAMPLE"),
    ):
        r = _kb(env, "circuit", "check", *args, "--dataset", "digits")
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(message), r.stderr


def _kb(env: dict, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run([str(exe), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
