"""Ordered, bounded work on threads: `in_order` applies a function to every item of a source on
several threads and hands the results over in the source's order, with a bounded number of items
in flight.

One thread at a time takes the next item from the source; each thread works on the item it took,
so several items are worked on at once. Results come back in the source's order; at most `ahead`
items are taken and not yet handed to the consumer, which bounds memory. An exception of the
source or of the work is raised in the consumer in its place; the source's end ends the results.
Closing the generator (the consumer stops, an error, Ctrl-C) sets the `stop` event, waits for the
threads (work that checks `stop` raises `Cancelled` to end early; its item is dropped), then closes
the source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_POLL_SECONDS = 0.1


class Cancelled(BaseException):
    """Raised by work to end its thread quietly once `stop` is set (the consumer has gone)."""


class _Crashed:
    """An exception of the source or the work, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


@dataclass
class _Flow(Generic[Item, Result]):
    """The shared state of one `in_order` run."""

    source: Any
    work: Callable[[Item], Result]
    stop: threading.Event
    slots: threading.Semaphore  # items taken but not yet handed to the consumer
    taking: threading.Lock = field(default_factory=threading.Lock)  # one thread at a time takes
    ready: threading.Condition = field(default_factory=threading.Condition)
    done: dict[int, Result | _Crashed] = field(default_factory=dict)  # by the index taken
    taken: int = 0
    end: StopIteration | _Crashed | None = None  # how taking ended (if it has)

    def take(self) -> tuple[int, Item] | None:
        """The next item and its index, or None when the source has ended or the consumer has gone."""
        while not self.slots.acquire(timeout=_POLL_SECONDS):
            if self.stop.is_set():
                return None
        with self.taking:
            if self.stop.is_set() or self.end is not None:
                return None
            try:
                item = next(self.source)
            except BaseException as error:  # noqa: BLE001  (StopIteration ends the run; others raise there)
                with self.ready:
                    self.end = error if isinstance(error, StopIteration) else _Crashed(error)
                    self.ready.notify_all()
                return None
            index, self.taken = self.taken, self.taken + 1
        return index, item

    def serve(self, thread_start: Callable[[], None] | None) -> None:
        """One thread: take items and work on them until the source ends or the consumer goes."""
        if thread_start is not None:
            thread_start()
        while (taken := self.take()) is not None:
            index, item = taken
            try:
                outcome: Result | _Crashed = self.work(item)
            except Cancelled:
                return
            except BaseException as error:  # noqa: BLE001  (raised in the consumer)
                outcome = _Crashed(error)
            with self.ready:
                self.done[index] = outcome
                self.ready.notify_all()

    def next_result(self, index: int) -> Result | _Crashed | StopIteration:
        """The result of item `index` once it is there, or how taking ended when there is no such item."""
        with self.ready:
            self.ready.wait_for(lambda: index in self.done or (index >= self.taken and self.end is not None))
            if index in self.done:
                return self.done.pop(index)
            assert self.end is not None  # what wait_for waited for
            return self.end


def in_order(
    source: Iterable[Item],
    work: Callable[[Item], Result],
    *,
    threads: int,
    ahead: int | None = None,
    stop: threading.Event | None = None,
    thread_start: Callable[[], None] | None = None,
    name: str = "samrefiner-work",
) -> Generator[Result, None, None]:
    """`work(item)` for every item of `source` on `threads` threads, yielded in the source's order, at
    most `ahead` (default: `threads`) items taken ahead of the consumer; `thread_start` runs first in
    each thread. See the module docstring."""
    iterator = iter(source)
    flow: _Flow[Item, Result] = _Flow(iterator, work, stop or threading.Event(), threading.Semaphore(ahead or threads))
    workers = [
        threading.Thread(target=flow.serve, args=(thread_start,), name=f"{name}-{n}", daemon=True)
        for n in range(threads)
    ]
    for thread in workers:
        thread.start()
    try:
        index = 0
        while True:
            result = flow.next_result(index)
            if isinstance(result, StopIteration):
                return
            if isinstance(result, _Crashed):
                raise result.error
            flow.slots.release()
            index += 1
            yield result
    finally:
        flow.stop.set()
        for thread in workers:
            thread.join()
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
