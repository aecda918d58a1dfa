"""Where a run spends its time: named stages of the real code path, recorded only when asked.

The runner and the refiner mark their stages with `with stage("decode"): ...`. Nothing is recorded
(and nothing synchronised) unless a `StageTimes` is active:

    times = StageTimes()
    with recording(times):
        run(dataset, refiner)
    times.seconds  # {"read": ..., "encode": ..., "mine": ..., "decode": ..., "upscale": ..., "write": ...}

Model stages (encode, decode, upscale) call `synchronize` on entry and exit so that asynchronous GPU
work is charged to the stage that queued it. It must name the model's device
(`samrefiner.models.device.synchronizer`: `torch.cuda.synchronize(cuda:K)`): stages run in several
threads, and a plain `torch.cuda.synchronize()` waits for the calling thread's current device,
which in a new thread is cuda:0. Stages may run in
several threads at once (the background loader reads while the model works): their seconds add up
to more than the wall time then.

Two images in flight (samrefiner.run.overlap): model stages stay serialized (one thread holds the model
at a time), so their sum is still the model's busy time and "idle" is the wall time the model was
free. Each free interval is charged (`charge_idle`) to the stage that the thread taking the model
next finished last (mining, waiting for input, ...): what the model was waiting for.
`idle_shares` splits idle time by those charges when there are any.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MODEL_STAGES = ("encode", "decode", "upscale")  # the model calls; everything else is "outside the model"
IDLE_CAUSES = {"reading": "wait for input", "mining": "mine", "writing": "write"}  # cause -> stage

_active: StageTimes | None = None
_finished = threading.local()  # .name: the stage this thread finished last (while recording)


class StageTimes:
    """Seconds, process CPU seconds (all threads, so only meaningful for stages that run alone) and
    calls per stage, thread-safe."""

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.idle: dict[str, float] = defaultdict(float)  # model-free seconds by charged stage (charge_idle)
        self.synchronize = synchronize
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.cpu_seconds[name] += cpu_seconds
            self.calls[name] += 1

    def add_idle(self, name: str, seconds: float) -> None:
        with self._lock:
            self.idle[name] += seconds

    def model_seconds(self) -> float:
        """Seconds inside the model calls (MODEL_STAGES)."""
        return sum(self.seconds.get(name, 0.0) for name in MODEL_STAGES)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the enclosed work to stage `name` of the active StageTimes (if any)."""
    times = _active
    if times is None:
        yield
        return
    synchronize = times.synchronize if name in MODEL_STAGES else None
    if synchronize is not None:
        synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        if synchronize is not None:
            synchronize()
        times.add(name, time.perf_counter() - start, time.process_time() - cpu_start)
        _finished.name = name


def last_stage() -> str | None:
    """The stage this thread finished last (None before any, or when nothing is recorded)."""
    return getattr(_finished, "name", None)


def charge_idle(name: str | None, seconds: float) -> None:
    """Charge `seconds` the model was free to stage `name` (see the module docstring)."""
    if _active is not None and name is not None:
        _active.add_idle(name, seconds)


@contextmanager
def recording(times: StageTimes) -> Iterator[StageTimes]:
    """Make `times` the active StageTimes for the enclosed code (all threads)."""
    global _active
    previous, _active = _active, times
    try:
        yield times
    finally:
        _active = previous


def idle_shares(times: StageTimes, wall: float) -> dict[str, float]:
    """Shares of `wall` seconds: "total" the model was idle (not in MODEL_STAGES), and of that the
    main thread's waiting for input ("reading"), mining and writing (IDLE_CAUSES), and "other".
    With idle charges (two images in flight), the causes are the charged seconds of those stages."""
    if wall <= 0:
        return {}
    total = max(0.0, 1.0 - times.model_seconds() / wall)
    spent = times.idle if times.idle else times.seconds
    parts = {cause: spent.get(name, 0.0) / wall for cause, name in IDLE_CAUSES.items()}
    return {"total": total, **parts, "other": max(0.0, total - sum(parts.values()))}
