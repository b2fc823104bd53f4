"""avss_sdk.pipeline: order, overlap, errors and shutdown of the stage threads (no model needed)."""

from __future__ import annotations

import threading

import pytest

from avss_sdk.pipeline import Pipeline


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-pipe") and t.is_alive()]


def counter(limit: int):
    items = iter(range(limit))
    return lambda: next(items, None)


@pytest.mark.timeout(20)
def test_every_item_comes_out_once_in_order_through_every_step():
    pipeline = Pipeline(counter(300), [lambda x: (x, "a"), lambda x: (*x, "b"), lambda x: (*x, "c")], name="test-pipe")
    assert list(pipeline) == [(i, "a", "b", "c") for i in range(300)]
    with pytest.raises(StopIteration):
        next(pipeline)
    pipeline.close()
    assert not pipeline_threads()


@pytest.mark.timeout(20)
def test_steps_of_consecutive_items_run_at_the_same_time():
    """The last step of item 0 waits until the first step has started item 1: only overlap lets it finish."""
    started = {i: threading.Event() for i in range(4)}
    threads: dict[str, set[str]] = {"first": set(), "last": set()}

    def first(x: int) -> int:
        threads["first"].add(threading.current_thread().name)
        started[x].set()
        return x

    def last(x: int) -> int:
        threads["last"].add(threading.current_thread().name)
        if x + 1 in started:
            assert started[x + 1].wait(10), f"item {x + 1} did not start while item {x} was in the last step"
        return x

    with_pipeline = Pipeline(counter(4), [first, lambda x: x, last], name="test-pipe")
    assert list(with_pipeline) == [0, 1, 2, 3]
    assert threads["last"] == {threading.current_thread().name} and threads["first"] != threads["last"]
    with_pipeline.close()


@pytest.mark.timeout(20)
def test_an_error_in_a_step_comes_out_after_the_items_before_it():
    def middle(x: int) -> int:
        if x == 5:
            raise KeyError("item 5")
        return x

    pipeline = Pipeline(counter(100), [lambda x: x, middle, lambda x: x], name="test-pipe")
    got = []
    with pytest.raises(KeyError, match="item 5"):
        for item in pipeline:
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    pipeline.close()
    assert not pipeline_threads()


@pytest.mark.timeout(20)
def test_an_error_while_reading_is_raised_by_next():
    def read() -> int:
        raise OSError("camera unplugged")

    pipeline = Pipeline(read, [lambda x: x, lambda x: x], name="test-pipe")
    with pytest.raises(OSError, match="unplugged"):
        next(pipeline)
    pipeline.close()


@pytest.mark.timeout(20)
def test_close_stops_reading_and_joins_every_thread():
    reads = []

    def read() -> int:
        reads.append(len(reads))
        return reads[-1]

    pipeline = Pipeline(read, [lambda x: x, lambda x: x, lambda x: x], depth=1, name="test-pipe")
    assert [next(pipeline) for _ in range(5)] == [0, 1, 2, 3, 4]
    pipeline.close()
    assert not pipeline_threads()
    read_so_far = len(reads)
    assert read_so_far <= 5 + 4  # a bounded number read ahead: one per queue and one per thread
    with pytest.raises(StopIteration):
        next(pipeline)
    assert len(reads) == read_so_far


def test_bad_arguments():
    with pytest.raises(ValueError):
        Pipeline(counter(1), [])
    with pytest.raises(ValueError):
        Pipeline(counter(1), [lambda x: x], depth=0)
