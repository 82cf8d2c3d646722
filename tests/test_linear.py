"""The kernel algebra on its own (no torch, no database)."""

import numpy as np
import pytest

from kb.graph import linear as L
from kb.graph.program import LinkProgram, Term, dumps, loads

pytestmark = pytest.mark.database_free  # pure torch/numpy: the same on either backend (see conftest)


def test_compose_conv_after_1x1_multiplies_reduce_into_kernel():
    reduce = L.Dense(np.array([[2.0, 3.0]]).reshape(1, 2, 1, 1))
    k3 = L.Dense(np.arange(9.0).reshape(1, 1, 3, 3), pad=(1, 1))
    k = L.compose(reduce, k3)
    assert k.weight.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(k.weight[0, 0], 2 * np.arange(9.0).reshape(3, 3))
    np.testing.assert_allclose(k.weight[0, 1], 3 * np.arange(9.0).reshape(3, 3))
    assert k.pad == (1, 1) and k.stride == (1, 1)


def test_compose_after_strided_pool_spreads_the_kernel():
    pool = L.box((2, 2), (2, 2), (0, 0), dtype=np.float64)
    k3 = L.Dense(np.ones((1, 1, 3, 3)), pad=(1, 1))
    k = L.compose(pool, k3)
    assert k.size == (6, 6) and k.stride == (2, 2) and k.pad == (2, 2)
    np.testing.assert_allclose(k.weight, np.full((1, 1, 6, 6), 0.25))


def test_add_aligns_windows_of_different_sizes():
    main = L.Dense(np.ones((1, 1, 3, 3)), pad=(1, 1))
    shortcut = L.to_dense(L.identity(np.float64), 1)
    total = L.add([main, shortcut])
    assert total.size == (3, 3)
    assert total.weight[0, 0, 1, 1] == 2.0 and total.weight.sum() == 10.0


def test_add_refuses_different_strides():
    with pytest.raises(ValueError):
        L.add([L.Dense(np.ones((1, 1, 1, 1)), stride=(2, 2)), L.Dense(np.ones((1, 1, 1, 1)))])


def test_compose_refuses_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        L.compose(L.Dense(np.ones((3, 1, 1, 1))), L.Dense(np.ones((1, 2, 1, 1))))


def test_program_storage_round_trip_and_single_kernel_matches_bulk():
    rng = np.random.default_rng(0)
    terms = (
        Term(0, 3, (L.Dense(rng.normal(size=(3, 4, 1, 1)).astype(np.float32)),)),
        Term(
            3,
            5,
            (
                L.Dense(rng.normal(size=(2, 4, 1, 1)).astype(np.float32)),
                L.Dense(rng.normal(size=(2, 2, 3, 3)).astype(np.float32), pad=(1, 1)),
            ),
        ),
        Term(5, 9, (L.box((3, 3), (1, 1), (1, 1)),)),
    )
    p = LinkProgram(4, 9, terms, ("a note",))
    q = loads(*dumps(p))
    assert q.method == "expanded" and q.notes == ("a note",)
    for target in range(9):
        np.testing.assert_allclose(q.kernel(target).weight, p.kernel(target).weight)
    blocks = list(q.expand(chunk=2))
    weights = {int(t): w for ts, ws, _ in blocks for t, w in zip(ts, ws, strict=True)}
    assert sorted(weights) == list(range(9))
    for target in range(9):
        np.testing.assert_allclose(weights[target], q.kernel(target).weight[0].sum(axis=(1, 2)), rtol=1e-5)
    # the pool-only term passes channel c to target 5 + c only
    assert weights[6].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_direct_needs_exactly_one_parametric_op():
    conv = L.Dense(np.ones((1, 1, 3, 3)))
    bn = L.Dense(np.ones((1, 1, 1, 1)), parametric=False)
    assert LinkProgram(1, 1, (Term(0, 1, (L.box((2, 2), (2, 2), (0, 0)), conv, bn)),)).method == "direct"
    assert LinkProgram(1, 1, (Term(0, 1, (conv, conv)),)).method == "expanded"


@pytest.mark.parametrize(
    ("size", "stride", "tiles"),
    [((2, 2), (2, 2), True), ((2, 3), (2, 4), True), ((3, 3), (2, 2), False), ((1, 1), (1, 1), True)],
)
def test_expand_sums_equal_those_of_the_kernels_it_may_skip_making(size, stride, tiles):
    """After a window whose stride is at least its size, expand() sums without making the kernels; the sums must
    be those of the kernels kernel() makes. An overlapping window (3x3/2) takes the general path."""
    from kb.graph.program import _tiling_head

    rng = np.random.default_rng(0)
    window = L.Spatial(rng.random(size).astype(np.float32), stride, (0, 0))
    conv = L.Dense(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), pad=(1, 1))
    program = LinkProgram(3, 5, (Term(0, 5, (window, conv)),))
    assert (_tiling_head(list(program.terms)) is not None) == tiles
    seen = 0
    for rows, weight, magnitude in program.expand(chunk=2):
        for i, target in enumerate(rows):
            k = program.kernel(int(target)).weight[0].astype(np.float64)
            np.testing.assert_allclose(weight[i], k.sum(axis=(1, 2)), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(magnitude[i], np.sqrt((k * k).sum(axis=(1, 2))), rtol=1e-5)
            seen += 1
    assert seen == 5
