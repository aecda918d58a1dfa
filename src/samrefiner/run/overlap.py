"""Two images in flight around one model (`refine --workers N`): one mines while the other's turn
at the model runs.

Mining of a cascade pass needs the masks of the pass before, so within one image mining and the
model take turns; across images they need not. `refine_overlapped` is a `refining` for
`samrefiner.run.runner.run`: `depth` threads each take the next loaded image and refine it with a copy
of the refiner whose `model_turn` lets one thread at a time into the model (encode, decode,
upscale), so the model works for one image while the other image is mined (or waits for input).
Results come back in dataset order, each the same as `refine_in_order` gives (model calls see the
same inputs; mining is per image), so outputs, records, scores and errors are unchanged. At most
`depth` images are taken ahead of the consumer.

The threads are those of `samrefiner.pipeline.in_order` (ordered, bounded). Each makes the model's
GPU its current CUDA device first (CUDA's current device is per thread: a new thread is on cuda:0,
whatever the main thread chose). Closing the generator (the run stops, an error, Ctrl-C) stops the
threads: each ends at its next model turn (the image in flight is dropped), then the loader is closed.

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
from typing import Any

from samrefiner.io.datasets import Sample, SampleRef
from samrefiner.models.device import cuda_device, make_current
from samrefiner.pipeline import Cancelled, in_order
from samrefiner.run.loader import Loaded
from samrefiner.run.runner import refine_one
from samrefiner.timing import charge_idle, last_stage, stage

DEPTH = 2


class ModelTurns:
    """Calling it gives a context that holds the model for one call, one thread at a time (once
    `stop` is set, the next turn raises `Cancelled` instead)."""

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
                raise Cancelled
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
    device = cuda_device(getattr(refiner, "model", None))  # with its index, as this thread has it

    def refine(item: tuple[SampleRef, Sample | Exception]) -> tuple[SampleRef, Sample | Exception, Any]:
        ref, sample = item
        return ref, sample, refine_one(own, sample)

    yield from in_order(
        loaded, refine, threads=depth, stop=stop, thread_start=lambda: make_current(device), name="samrefiner-refine"
    )
