"""samrefiner.pipeline.in_order: work on several threads, results in the source's order, a bounded
number of items in flight, errors raised in place, and closing stops the threads."""

from __future__ import annotations

import threading
import time

import pytest

from samrefiner.pipeline import Cancelled, in_order


def test_results_come_in_order_with_at_most_ahead_items_in_flight() -> None:
    taken: list[int] = []
    handed: list[int] = []
    lock = threading.Lock()

    def source():
        for item in range(12):
            with lock:
                taken.append(item)
                assert len(taken) - len(handed) <= 3 + 1  # `ahead` beyond the consumer, and the one handed over
            yield item

    def work(item: int) -> int:
        time.sleep(0.02 * (item % 3 == 0))  # some items slower: results finish out of order
        return item * item

    started: list[str] = []
    first = lambda: started.append(threading.current_thread().name)  # noqa: E731
    for result in in_order(source(), work, threads=3, thread_start=first):
        with lock:
            handed.append(result)
    assert handed == [item * item for item in range(12)]
    assert sorted(started) == ["samrefiner-work-0", "samrefiner-work-1", "samrefiner-work-2"]


def test_an_error_is_raised_in_its_place_and_closing_stops_the_threads() -> None:
    def work(item: int) -> int:
        if item == 2:
            raise ValueError("item 2")
        return item

    results = in_order(iter(range(10)), work, threads=2)
    assert next(results) == 0 and next(results) == 1
    with pytest.raises(ValueError, match="item 2"):
        next(results)


def test_closing_stops_the_threads_and_closes_the_source() -> None:
    stop = threading.Event()
    closed, cancelled = threading.Event(), []

    def source():
        try:
            yield from range(100)
        finally:
            closed.set()

    def work(item: int) -> int:
        while item > 0 and not stop.is_set():  # every item after the first waits for the consumer to go
            time.sleep(0.01)
        if stop.is_set():
            cancelled.append(item)
            raise Cancelled
        return item

    before = threading.active_count()
    results = in_order(source(), work, threads=2, stop=stop)
    assert next(results) == 0
    results.close()
    assert stop.is_set() and closed.is_set() and threading.active_count() == before
    assert cancelled and all(item > 0 for item in cancelled)  # the items in flight were dropped
