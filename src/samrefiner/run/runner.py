"""The batch loop of `samrefiner refine`: every image of a dataset through a refiner, resumably.

For each selected image: load it (image + coarse masks, samrefiner.run.loader), refine, write its
outputs and then its record (samrefiner.run.writes, samrefiner.run.records). The record is the mark
of a finished image: a resumed run skips images that have one, and redoes exactly the finished
images whose input files changed since, and says how many. An image that fails gives one line in
the errors file and the run goes on. At the end the dataset merges the records (samrefiner.run.merge;
COCO: the output JSON) and the per-object scores are written.

Sharding (samrefiner.run.shards), the loader and `refining` are parameters so that several
processes (SLURM arrays, torchrun ranks) can split one dataset, reading can move to a background
loader, and two images can be refined at once (samrefiner.run.overlap), results still taken in
dataset order.

Run identity: given a `manifest` (see samrefiner.run.manifest), the run first claims the output: an
output of another run is refused (or removed with `overwrite`), so output never mixes two runs;
every file the run writes outside its work folder is listed in its journal.

Failure policy (samrefiner.run.failures): a failed image gets one line in the errors file and its
traceback in `<work>/failures.log`; bad inputs (`InputError`, and whatever else reading an
image's files raises, see `loader.load_one`) never stop the run; the same other
exception type on `max_consecutive_failures` images in a row, or any device error (CUDA out of
memory, ...), stops it at once: `Summary.stopped` names the cause, finished work is merged and kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from tqdm import tqdm

from samrefiner.errors import InputError
from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.io.images import announcing_writes, atomic_write
from samrefiner.run.failures import (
    DEFAULT_MAX_CONSECUTIVE,
    ErrorLog,
    FailureLog,
    FailurePolicy,
)
from samrefiner.run.fingerprints import first_change
from samrefiner.run.loader import Loaded, Loader, load_in_order
from samrefiner.run.manifest import Journal, claim
from samrefiner.run.merge import merge_outputs
from samrefiner.run.records import RecordStore
from samrefiner.run.shards import Shard, select, shard_path
from samrefiner.run.summary import Summary
from samrefiner.run.writes import InlineWrites, Writer
from samrefiner.timing import stage

Refining = Callable[[Any, Loaded], Generator[tuple[SampleRef, "Sample | Exception", Any], None, None]]


def refine_one(refiner: Any, loaded: Sample | Exception) -> Any:
    """The refiner's result for a loaded sample, or the exception that loading or refining raised."""
    if isinstance(loaded, Exception):
        return loaded
    try:
        return refiner.refine(loaded.image, loaded.masks)
    except Exception as error:  # noqa: BLE001  (recorded; the failure policy decides)
        return error


def refine_in_order(refiner: Any, loaded: Loaded) -> Generator[tuple[SampleRef, Sample | Exception, Any], None, None]:
    """(ref, sample or its load failure, result or failure) of each image, refined in turn."""
    for ref, sample in loaded:
        yield ref, sample, refine_one(refiner, sample)


@dataclass(frozen=True)
class RunOptions:
    """How `run` goes through a dataset.

    `limit`: the first `limit` images of this shard. `resume`: skip the images an earlier run
    finished, unless their input files changed since (those are redone). `manifest`: claim the
    output for this run first (samrefiner.run.manifest.claim with `resume` and `overwrite`).
    `merge=False` leaves merging the finished records into the output to a later `merge_outputs`
    (several processes writing one output merge once, after all of them are done). `stop_flag`: a
    file shared by the processes of one run; a process that stops writes its cause there, the
    others stop after their current image. `refining`: how loaded images become results
    (`refine_in_order`, or samrefiner.run.overlap's two at a time); an image still in flight when the
    run stops is dropped (no output, no record)."""

    shard: Shard = Shard()
    limit: int | None = None
    resume: bool = False
    errors_path: Path | None = None
    overlays: Path | None = None
    progress: bool = True
    loader: Loader = load_in_order
    merge: bool = True
    writer: Writer = InlineWrites
    manifest: dict[str, Any] | None = None
    overwrite: bool = False
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE
    stop_flag: Path | None = None
    refining: Refining = refine_in_order


@dataclass
class Plan:
    """The images a run refines: those selected, less those an earlier run finished (`resume`)
    from inputs that are still as they were."""

    todo: list[SampleRef]
    skipped: int
    changed: list[str]  # why each finished image is redone ("<file>: changed")


def plan(dataset: Dataset, store: RecordStore, options: RunOptions) -> Plan:
    chosen = select(dataset.refs(), options.shard, options.limit)
    finished = store.finished(ref.key for ref in chosen) if options.resume else set()
    changes = {ref.key: input_change(dataset, store, ref) for ref in chosen if ref.key in finished}
    todo = [ref for ref in chosen if ref.key not in finished or changes[ref.key]]
    return Plan(todo, len(chosen) - len(todo), [change for change in changes.values() if change])


def input_change(dataset: Dataset, store: RecordStore, ref: SampleRef) -> str | None:
    """How a finished image's input files differ from those its record was made from (None: not)."""
    try:
        files = dataset.input_files(ref)
    except InputError as error:
        return str(error)
    return first_change(store.load(ref.key).get("inputs"), files)


def run(dataset: Dataset, refiner: Any, options: RunOptions | None = None, **fields: Any) -> Summary:
    """Refine this shard's images of `dataset` with `refiner` (anything with `.refine(image, masks)`)
    as `options` say (`fields`: RunOptions fields to replace, e.g. `run(dataset, refiner, limit=2)`)."""
    options = replace(options or RunOptions(), **fields)
    if options.manifest is not None:
        claim(dataset.layout, options.manifest, resume=options.resume, overwrite=options.overwrite)
    batch = Batch(dataset, options)
    try:
        batch.go(refiner)
    finally:
        batch.close()
    if options.merge:
        with stage("write"), announcing_writes(batch.journal.add):
            merge_outputs(dataset)
    batch.summary.seconds = time.perf_counter() - batch.start
    return batch.summary


class Batch:
    """One run's images through the refiner: failures recorded, the failure policy applied."""

    def __init__(self, dataset: Dataset, options: RunOptions) -> None:
        self.dataset, self.options = dataset, options
        self.store = RecordStore(dataset.layout.work_dir)
        self.plan = plan(dataset, self.store, options)
        errors_path = options.errors_path or shard_path(dataset.layout.errors_path, options.shard)
        self.journal = Journal(dataset.layout, options.shard.suffix)
        self.journal.add(errors_path)
        self.errors = ErrorLog(errors_path)
        self.tracebacks = FailureLog(dataset.layout.work_dir / "failures.log")
        self.policy = FailurePolicy(options.max_consecutive_failures)
        self.summary = Summary(skipped=self.plan.skipped, errors_path=self.errors.path, changed=self.plan.changed)
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=len(self.plan.todo), unit="img", disable=not options.progress, file=sys.stderr, dynamic_ncols=True
        )
        self.writes = options.writer(dataset, self.store, options.overlays)

    def go(self, refiner: Any) -> None:
        """Refine and write every image to do, in order, until done or stopped."""
        loaded = self.options.loader(self.dataset, self.plan.todo)
        with announcing_writes(self.journal.add), closing(self.options.refining(refiner, loaded)) as outcomes:
            for ref, sample, outcome in outcomes:
                try:
                    if isinstance(outcome, Exception):
                        raise outcome
                    self.writes.submit(cast(Sample, sample), outcome)  # loaded, since refined
                except Exception as error:  # noqa: BLE001  (recorded; the failure policy decides)
                    self.writes.fail(ref, error)
                self.settle(self.writes.settled())
                self.advance()
                if self.stopped():
                    break
            self.settle(self.writes.settled(wait=True))  # images refined before a stop are written and kept

    def settle(self, finished: Iterable[tuple[SampleRef, Any, Exception | None]]) -> None:
        """Count written images; record failed ones (the failure policy may stop the run)."""
        for ref, result, error in finished:
            if error is None:
                self.summary.images += 1
                self.summary.count_objects(result)
                self.policy.succeeded()
                continue
            self.store.drop(ref.key)
            self.errors.add(ref, error)
            self.tracebacks.add(ref.name, error)
            cause = self.policy.failed(ref.name, error)
            if cause and self.summary.stopped is None:
                self.summary.stopped = cause
                if self.options.stop_flag is not None:
                    text = cause.encode("utf-8")
                    atomic_write(self.options.stop_flag, lambda handle, text=text: handle.write(text))

    def advance(self) -> None:
        rate = self.summary.all_objects / (time.perf_counter() - self.start)
        self.bar.set_postfix_str(f"{rate:.1f} objects/s", refresh=False)
        self.bar.update(1)

    def stopped(self) -> bool:
        """Whether this run stops: its own failure policy, or another process of the run (stop flag)."""
        flag = self.options.stop_flag
        if self.summary.stopped is None and flag is not None and flag.exists():
            self.summary.stopped = flag.read_text(encoding="utf-8")
        return bool(self.summary.stopped)

    def close(self) -> None:
        self.writes.close()
        self.bar.close()
        self.errors.close()
        self.summary.failures, self.summary.failed = self.errors.count, self.errors.entries
