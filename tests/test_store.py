"""The serving graph's sort: the packed-key argsort orders edges exactly as np.lexsort does."""

import numpy as np
import pytest

from kb.graph import store


@pytest.mark.parametrize("n", [5804, 2**20])  # packed 64-bit key; too many units for it: np.lexsort
def test_packed_sort_matches_lexsort(n):
    rng = np.random.default_rng(0)
    m = 200_000
    row = rng.integers(0, min(n, 3000), m)
    other = rng.permutation(m) % n  # (row, other) may repeat: ties then fall to the neighbour order
    values = rng.choice(np.array([-1.5, -0.0, 0.0, 0.25, 2.0, 1e-30, -1e-30], dtype=np.float32), m)
    got = store._by_row_then_descending(n, row, values, other)
    want = np.lexsort((other, -values, row))
    assert np.array_equal(row[got], row[want]) and np.array_equal(values[got], values[want])
    assert np.array_equal(other[got], other[want])
    stable = store._by_row_then_descending(n, row, values)
    assert np.array_equal(stable, np.lexsort((np.arange(m), -values, row)))


def test_rows_order_by_weight_and_magnitude():
    mine = np.array([0, 0, 0, 1, 1])
    other = np.array([2, 3, 4, 2, 3])
    weight = np.array([0.5, -1.0, 2.0, 0.0, -0.5], dtype=np.float32)
    rows = store.Rows.build(2, mine, other, weight, np.abs(weight))
    assert list(rows.other[rows.positions(0)]) == [4, 2, 3]  # weight descending
    assert list(rows.other[rows.positions(0, store.MAGNITUDE)]) == [4, 3, 2]
    assert rows.count(0, store.POSITIVE) == 2 and rows.count(1, store.NEGATIVE) == 1
