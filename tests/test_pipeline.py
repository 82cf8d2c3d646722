"""The import's threads (kb.pipeline): order kept, failures handed to the caller, no thread left running."""

import threading

import pytest

from kb.pipeline import Behind, prefetch


def test_behind_calls_in_order_and_waits_for_the_rest_at_the_end():
    seen = []
    with Behind(seen.append, depth=2) as behind:
        for i in range(100):
            behind(i)
    assert seen == list(range(100))


def test_behind_hands_a_failure_to_the_caller():
    def fail_at_3(x):
        if x == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Behind(fail_at_3, depth=1) as behind:
        for i in range(10):
            behind(i)
    assert not any(t.name == "kb-behind" for t in threading.enumerate())


def test_behind_drops_the_rest_when_the_caller_fails():
    seen = []
    with pytest.raises(RuntimeError), Behind(seen.append) as behind:
        behind(1)
        raise RuntimeError("the COPY failed")
    assert seen in ([], [1])  # whatever was already taken, nothing after


def test_prefetch_keeps_order_and_raises_the_producer_failure():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        list(prefetch(broken()))
