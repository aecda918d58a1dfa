"""Reading and writing beside the model: a background thread, or N worker processes (`--workers N`).

`load_in_background` is a drop-in `loader` for `samrefiner.run.runner.run`: the same (ref, sample or
exception) pairs as `load_in_order`, in the same order, but a thread decodes up to `depth` samples
ahead (a bounded queue, so memory holds at most depth + 2 samples: the queue, the one being
decoded and the one being refined). A sample that fails to load comes back as its exception, in its
place; anything else that stops the thread is raised in the consumer. Closing the generator early
(an error or Ctrl-C in the consumer) stops the thread.

`Workers(dataset, n)` starts n processes (spawn) that each hold the dataset: its `loader` decodes
images there (up to 2 n ahead) and its `writer` writes each image's outputs and resume record
there (up to 2 n pending). Workers leave Ctrl-C to the main process and exit by themselves when
it dies (a kill -9 leaves no process behind). Both keep the run's order: samples and failures come back in dataset
order, so outputs, records, scores and errors are those of a run without workers. The model, and
prompt mining, stay in the main process (where samrefiner.run.overlap mines one image while the model
works on another).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from samrefiner.errors import show_input_warnings
from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.io.images import announcing_writes
from samrefiner.run.manifest import Journal
from samrefiner.run.runner import InlineWrites, RecordStore, load_one, write_and_record
from samrefiner.timing import stage

DEFAULT_DEPTH = 2
_POLL_SECONDS = 0.1
_ORPHAN_POLL_SECONDS = 0.2  # how soon a worker notices that the main process died


class _Crashed:
    """Carries an error that ended the loader thread (not a per-sample failure)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def load_in_background(
    dataset: Dataset, refs: list[SampleRef], depth: int = DEFAULT_DEPTH
) -> Iterator[tuple[SampleRef, Sample | Exception]]:
    """`load_in_order`, decoded by a background thread that stays at most `depth` samples ahead."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        """Put `item` in the queue unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for ref in refs:
                if not hand_over((ref, load_one(dataset, ref))):
                    return
        except BaseException as error:  # noqa: BLE001  (handed to the consumer, which raises it)
            hand_over(_Crashed(error))

    thread = threading.Thread(target=produce, name="samrefiner-loader", daemon=True)
    thread.start()
    try:
        for _ in refs:
            with stage("wait for input"):
                item = ready.get()
            if isinstance(item, _Crashed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class Workers:
    """N processes holding `dataset`, for reading (`loader`) and writing (`writer`) in `runner.run`."""

    def __init__(self, dataset: Dataset, count: int) -> None:
        if count < 1:
            raise ValueError(f"need at least one worker, got {count}")
        self.count = count
        self.executor = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"), initializer=_hold, initargs=(dataset, os.getpid())
        )
        with _sigint_ignored():  # inherited: a Ctrl-C while a worker starts up is no traceback there
            for _ in range(count):
                self.executor.submit(int)  # the pool starts a process per task while none is idle

    def loader(self, dataset: Dataset, refs: list[SampleRef]) -> Iterator[tuple[SampleRef, Sample | Exception]]:
        """`load_in_order`, each sample decoded in a worker, up to 2 n ahead."""
        ahead: deque[tuple[SampleRef, Future]] = deque()
        upcoming = iter(refs)
        try:
            for ref in upcoming:
                ahead.append((ref, self.executor.submit(_load, ref)))
                if len(ahead) >= 2 * self.count:
                    yield self._next(ahead)
            while ahead:
                yield self._next(ahead)
        finally:
            for _, future in ahead:
                future.cancel()

    def writer(self, dataset: Dataset, store: RecordStore, overlays: Path | None) -> InlineWrites:
        return _ProcessWrites(self, dataset, store, overlays)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _next(ahead: deque[tuple[SampleRef, Future]]) -> tuple[SampleRef, Sample | Exception]:
        ref, future = ahead.popleft()
        with stage("wait for input"):
            return ref, future.result()


class _ProcessWrites(InlineWrites):
    """Writes in the workers, at most 2 n images pending (the model waits beyond that)."""

    def __init__(self, workers: Workers, dataset: Dataset, store: RecordStore, overlays: Path | None) -> None:
        super().__init__(dataset, store, overlays)
        self.workers = workers

    def _start(self, sample: Sample, result: Any) -> Future:
        busy = [future for _, _, future in self.pending if not future.done()]
        if len(busy) >= 2 * self.workers.count:
            with stage("write"):
                busy[0].exception()
        with stage("write"):
            return self.workers.executor.submit(_write, self.store.folder.parent, sample, _Written.of(result), self.overlays)

    def close(self) -> None:
        for _, _, future in self.pending:
            future.cancel()


@dataclass
class _Written:
    """What writing needs of a RefineResult (picklable without torch)."""

    masks: np.ndarray
    scores: np.ndarray
    chosen: np.ndarray
    empty_input: np.ndarray
    empty_output: np.ndarray
    prompts: SimpleNamespace

    @classmethod
    def of(cls, result: Any) -> _Written:
        prompts = SimpleNamespace(box_expanded=np.asarray(result.prompts.box_expanded))
        return cls(result.masks, result.scores, result.chosen, result.empty_input, result.empty_output, prompts)


_dataset: Dataset | None = None  # the dataset of this worker process
_journal: Journal | None = None  # the files this worker process wrote


def _hold(dataset: Dataset, parent: int) -> None:
    """Set up a worker: its dataset, one-line input warnings, Ctrl-C left to the main process (which
    stops the pool; one line, no traceback per worker), and an exit as soon as the main process is
    gone (killed with SIGKILL included), which also lets multiprocessing's resource tracker end."""
    global _dataset
    _dataset = dataset
    show_input_warnings()  # a worker's input warnings are one line each, as in the main process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), name="samrefiner-orphan-watch", daemon=True).start()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside the block (processes started there inherit that); a no-op outside the
    main thread, where Python cannot change signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_without(parent: int) -> None:
    """End this process once `parent` is no longer its parent (it died and the process was adopted)."""
    while os.getppid() == parent:
        time.sleep(_ORPHAN_POLL_SECONDS)
    os._exit(1)


def _load(ref: SampleRef) -> Sample | Exception:
    """The sample, or its loading error carrying this process's traceback as text (a traceback
    does not cross processes; `failures.log` prints it)."""
    loaded = load_one(_dataset, ref)
    if isinstance(loaded, Exception):
        loaded.worker_traceback = "".join(traceback.format_exception(loaded))  # type: ignore[attr-defined]
    return loaded


def _write(work_dir: Path, sample: Sample, result: _Written, overlays: Path | None) -> None:
    """Write in this worker, listing the files in its own journal (what `--overwrite` removes)."""
    global _journal
    if _journal is None:
        _journal = Journal(_dataset.layout, f".worker-{socket.gethostname()}-{os.getpid()}")
    with announcing_writes(_journal.add):
        write_and_record(_dataset, RecordStore(work_dir), sample, result, overlays)
