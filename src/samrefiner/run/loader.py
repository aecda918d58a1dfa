"""Loading a dataset run's images: in turn, on a background thread, or in N worker processes
(`--workers N`, which also write).

`load_in_order` decodes each image in turn (`load_one`: a failure comes back in place of its
sample). `load_in_background` is a drop-in `loader` for `samrefiner.run.runner.run`: the same
(ref, sample or exception) pairs, in the same order, but a thread (samrefiner.pipeline.in_order)
decodes ahead: at most `depth` decoded samples wait, so memory holds at most depth + 2 samples (those
waiting, the one being decoded and the one being refined). A sample that fails to load comes back
as its exception, in its place; anything else that stops the thread is raised in the consumer.
Closing the generator early (an error or Ctrl-C in the consumer) stops the thread.

`Workers(dataset, n)` starts n processes (spawn) that each hold the dataset: its `loader` decodes
images there (up to 2 n ahead) and its `writer` writes each image's outputs and resume record
there (up to 2 n pending). Workers leave Ctrl-C to the main process and exit by themselves when
it dies (a kill -9 leaves no process behind). Both keep the run's order: samples and failures come
back in dataset order, so outputs, records, scores and errors are those of a run without workers.
The model, and prompt mining, stay in the main process (where samrefiner.run.overlap mines one image
while the model works on another).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from samrefiner.errors import InputError, show_input_warnings
from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.io.images import announcing_writes
from samrefiner.pipeline import in_order
from samrefiner.run.failures import describe_failure
from samrefiner.run.fingerprints import fingerprint
from samrefiner.run.manifest import Journal
from samrefiner.run.records import RecordStore
from samrefiner.run.writes import InlineWrites, write_and_record
from samrefiner.timing import stage

Loaded = Iterable[tuple[SampleRef, "Sample | Exception"]]
Loader = Callable[[Dataset, list[SampleRef]], Loaded]

DEFAULT_DEPTH = 2
_ORPHAN_POLL_SECONDS = 0.2  # how soon a worker notices that the main process died


def load_in_order(dataset: Dataset, refs: list[SampleRef]) -> Iterator[tuple[SampleRef, Sample | Exception]]:
    """Each image decoded in turn; a failure comes back in place of its sample."""
    for ref in refs:
        yield ref, load_one(dataset, ref)


def load_one(dataset: Dataset, ref: SampleRef) -> Sample | Exception:
    """The decoded sample with the fingerprints of its input files, or the exception that loading
    raised (the "read" stage). Whatever reading one image's files raises is a fault of that input:
    an error that is not an InputError comes back as one (same line, the original as its cause), so
    that the failure policy never takes a bad input for a broken run."""
    with stage("read"):
        try:
            sample = dataset.load(ref)
            sample.inputs = fingerprint(dataset.input_files(ref))
            return sample
        except InputError as error:
            return error
        except Exception as error:  # noqa: BLE001  (recorded, and the run goes on)
            wrapped = InputError(describe_failure(ref, error))
            wrapped.__cause__ = error
            return wrapped


def load_in_background(
    dataset: Dataset, refs: list[SampleRef], depth: int = DEFAULT_DEPTH
) -> Iterator[tuple[SampleRef, Sample | Exception]]:
    """`load_in_order`, decoded by a background thread: at most `depth` decoded samples wait, plus
    the one being decoded."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")

    def load(ref: SampleRef) -> tuple[SampleRef, Sample | Exception]:
        return ref, load_one(dataset, ref)

    loads = in_order(refs, load, threads=1, ahead=depth + 1, name="samrefiner-loader")
    with closing(loads):
        while True:
            with stage("wait for input"):
                loaded = next(loads, None)
            if loaded is None:
                return
            yield loaded


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
            written = _Written.of(result)
            return self.workers.executor.submit(_write, self.store.folder.parent, sample, written, self.overlays)

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
