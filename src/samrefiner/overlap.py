"""Two images in flight around one model (`refine --workers N`): one mines while the other's turn
at the model runs.

Mining of a cascade pass needs the masks of the pass before, so within one image mining and the
model take turns; across images they need not. `refine_overlapped` is a `refining` for
`samrefiner.runner.run`: `depth` threads each take the next loaded image and refine it with a copy
of the refiner whose `model_turn` lets one thread at a time into the model (encode, decode,
upscale), so the model works for one image while the other image is mined (or waits for input).
Results come back in dataset order, each the same as `refine_in_order` gives (model calls see the
same inputs; mining is per image), so outputs, records, scores and errors are unchanged. At most
`depth` images are taken ahead of the consumer.

Closing the generator (the run stops, an error, Ctrl-C) stops the threads: each ends at its next
model turn (the image in flight is dropped), then the loader is closed.

Timing (samrefiner.timing): model stages run inside the turn, so they never overlap and the model's
idle share stays exact; each interval the model was free is charged to the stage the thread taking
the next turn finished last (e.g. "mine", "wait for input"); time spent waiting for a turn is the
stage "wait for model" (the model was busy then).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from samrefiner.io.datasets import Sample, SampleRef
from samrefiner.runner import Loaded, refine_one
from samrefiner.timing import charge_idle, last_stage, stage

DEPTH = 2
_POLL_SECONDS = 0.1


class _Stopped(BaseException):
    """Ends a refinement thread at its next model turn once the consumer has gone."""


class _Crashed:
    """An error that is not a per-image failure (the loader broke): raised in the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


@dataclass
class _Taken:
    """How many images the threads took from the loader, and how taking ended (if it has)."""

    count: int = 0
    end: StopIteration | _Crashed | None = None


class ModelTurns:
    """Calling it gives a context that holds the model for one call, one thread at a time."""

    def __init__(self, stop: threading.Event) -> None:
        self._lock = threading.Lock()
        self._stop = stop
        self._free_since = time.perf_counter()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        waited_for = last_stage()
        with stage("wait for model"):
            self._lock.acquire()
        try:
            if self._stop.is_set():
                raise _Stopped
            charge_idle(waited_for, time.perf_counter() - self._free_since)
            yield
        finally:
            self._free_since = time.perf_counter()
            self._lock.release()


def refine_overlapped(
    refiner: Any, loaded: Loaded, depth: int = DEPTH
) -> Generator[tuple[SampleRef, Sample | Exception, Any], None, None]:
    """`runner.refine_in_order`, with `depth` images refined at once, one of them at the model."""
    stop = threading.Event()
    own = copy.copy(refiner)
    own.model_turn = ModelTurns(stop)
    source = iter(loaded)
    taking = threading.Lock()  # one thread at a time takes from the loader
    slots = threading.Semaphore(depth)  # images taken but not yet handed to the consumer
    ready = threading.Condition()
    done: dict[int, tuple[SampleRef, Sample | Exception, Any] | _Crashed] = {}  # by the index taken
    taken = _Taken()

    def take() -> tuple[int, SampleRef, Sample | Exception] | None:
        while not slots.acquire(timeout=_POLL_SECONDS):
            if stop.is_set():
                return None
        with taking:
            if stop.is_set() or taken.end is not None:
                return None
            try:
                ref, sample = next(source)
            except BaseException as error:  # noqa: BLE001  (StopIteration ends the run; others raise there)
                with ready:
                    taken.end = error if isinstance(error, StopIteration) else _Crashed(error)
                    ready.notify_all()
                return None
            index, taken.count = taken.count, taken.count + 1
        return index, ref, sample

    def work() -> None:
        while (item := take()) is not None:
            index, ref, sample = item
            outcome: tuple[SampleRef, Sample | Exception, Any] | _Crashed
            try:
                outcome = (ref, sample, refine_one(own, sample))
            except _Stopped:
                return
            except BaseException as error:  # noqa: BLE001  (raised in the consumer)
                outcome = _Crashed(error)
            with ready:
                done[index] = outcome
                ready.notify_all()

    threads = [threading.Thread(target=work, name=f"samrefiner-refine-{n}", daemon=True) for n in range(depth)]
    for thread in threads:
        thread.start()
    try:
        index = 0
        while True:
            with ready:
                ready.wait_for(lambda: index in done or (index >= taken.count and taken.end is not None))
                item = done.pop(index) if index in done else taken.end
            if item is None or isinstance(item, StopIteration):
                return
            if isinstance(item, _Crashed):
                raise item.error
            slots.release()
            index += 1
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        close = getattr(source, "close", None)
        if close is not None:
            close()
