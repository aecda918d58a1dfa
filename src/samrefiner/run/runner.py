"""The batch loop of `samrefiner refine`: every image of a dataset through a refiner, resumably.

For each selected image: load it (image + coarse masks), refine, write its outputs (each file
atomically), then write its record into the work folder. The record is the mark of a finished
image: a resumed run skips images that have one, so a run killed at any point loses at most the
image in progress and never writes an image twice. Records are named by the sha256 of the image's
key (any path the file system takes as an input works) and hold the fingerprints of the image's
input files (samrefiner.run.fingerprints): a resumed run redoes exactly the finished images whose
input files changed since, and says how many. An image that fails gives one line in the
errors file and the run goes on. At the end the dataset merges the records (COCO: the output
JSON) and the per-object scores are written.

Scores file (`<out>/scores.jsonl`, or `<name>.scores.jsonl` beside a `.json` output): one JSON
object per line and per finished image, in dataset order:

    {"image": "<key>", "file": "<image path relative to --images>",
     "objects": [{"id": ..., "category_id": ..., "predicted_iou": 0.93, "chosen": 1,
                  "empty_input": false, "empty_output": false, "box_expanded": false}, ...]}

`key` names the image (its path relative to `--images` without suffix; the image id for COCO);
object `id` is the mask's file name (masks), the region's index in the image's split-then-merge
regions (label maps, `category_id` its class) or the annotation id (COCO, `category_id` kept);
`predicted_iou` is SAM's predicted IoU of the chosen mask (null when the object kept its
coarse mask), `chosen` its index among the three candidates (-1 then); `empty_input`/`empty_output` flag an empty coarse mask and an empty refined output
(the coarse mask was kept); `box_expanded` tells whether the elastic box grew.

Sharding (`Shard`), the loader and `refining` are parameters so that several processes (SLURM
arrays, torchrun ranks) can split one dataset, reading can move to a background loader, and two
images can be refined at once (samrefiner.run.overlap), results still taken in dataset order.

Run identity: given a `manifest` (see samrefiner.run.manifest), the run first claims the output: an
output of another run is refused (or removed with `overwrite`), so output never mixes two runs;
every file the run writes outside its work folder is listed in its journal.

Failure policy (samrefiner.run.failures): a failed image gets one line in the errors file and its
traceback in `<work>/failures.log`; bad inputs (`InputError`, and whatever else reading an
image's files raises, see `load_one`) never stop the run; the same other
exception type on `max_consecutive_failures` images in a row, or any device error (CUDA out of
memory, ...), stops it at once: `Summary.stopped` names the cause, finished work is merged and kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from tqdm import tqdm

from samrefiner.errors import InputError, SamRefinerError
from samrefiner.run.failures import DEFAULT_MAX_CONSECUTIVE, FailureLog, FailurePolicy
from samrefiner.run.fingerprints import fingerprint, first_change
from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.io.images import announcing_writes, atomic_write
from samrefiner.run.manifest import Journal, claim
from samrefiner.timing import stage

Loader = Callable[[Dataset, list[SampleRef]], Iterable[tuple[SampleRef, "Sample | Exception"]]]
Loaded = Iterable[tuple[SampleRef, "Sample | Exception"]]
Refining = Callable[[Any, Loaded], Generator[tuple[SampleRef, "Sample | Exception", Any], None, None]]


@dataclass(frozen=True)
class Shard:
    """Every `count`-th image starting at the `index`-th (0-based), e.g. a SLURM array task."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'K/N' -> Shard(K, N) with 0 <= K < N (InputError naming `text` otherwise)."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"{text}: expected K/N, e.g. 0/4") from None
        if not 0 <= index < count:
            raise InputError(f"{text}: K must be in 0..N-1")
        return cls(index, count)

    def select(self, refs: list[SampleRef]) -> list[SampleRef]:
        return refs[self.index :: self.count]

    @property
    def suffix(self) -> str:
        """A file-name suffix that keeps the shards' own files apart ('' when unsharded)."""
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"


@dataclass
class Summary:
    """What one run did."""

    images: int = 0  # refined in this run
    objects: int = 0  # refined: coarse mask and output both non-empty
    empty_inputs: int = 0  # empty coarse masks (kept as they were)
    empty_outputs: int = 0  # non-empty coarse masks whose output was empty (the coarse mask kept)
    failures: int = 0
    skipped: int = 0  # already finished by an earlier run (--resume)
    seconds: float = 0.0
    errors_path: Path | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image key, errors-file line)
    idle: dict[str, float] | None = None  # share of the wall time the model waited, by cause (timing.idle_shares)
    stopped: str | None = None  # why the run stopped early (failure policy), None when it did not
    changed: list[str] = field(default_factory=list)  # finished images redone: their inputs changed (--resume)

    def __str__(self) -> str:
        rate = f"{self.images / self.seconds:.2f} images/s" if self.seconds else "-"
        kept = [
            f"{count} {what} kept{how}"
            for count, what, how in (
                (self.empty_inputs, "empty coarse mask" + "s" * (self.empty_inputs != 1), ""),
                (self.empty_outputs, "empty output" + "s" * (self.empty_outputs != 1), " coarse"),
            )
            if count
        ]
        text = f"{self.images} images, {self.objects} objects refined"
        if kept:
            text += f" ({', '.join(kept)})"
        text += f" in {self.seconds:.1f} s ({rate}); {self.failures} failed"
        if self.failures:
            text += f" (see {self.errors_path})"
        if self.skipped:
            text += f"; {self.skipped} already done"
        if self.changed:
            more = ", ..." if len(self.changed) > 1 else ""
            text += f"; {len(self.changed)} redone, their inputs changed ({self.changed[0]}{more})"
        if self.idle:
            causes = ", ".join(f"{name} {share:.0%}" for name, share in self.idle.items() if name != "total")
            text += f"; model idle {self.idle['total']:.0%} of the time ({causes})"
        return text

    def count_objects(self, result: Any) -> None:
        """Add one image's objects: refined, empty coarse masks, empty outputs."""
        empty_input = [bool(flag) for flag in result.empty_input]
        empty_output = [bool(flag) and not empty for flag, empty in zip(result.empty_output, empty_input)]
        self.empty_inputs += sum(empty_input)
        self.empty_outputs += sum(empty_output)
        self.objects += len(empty_input) - sum(empty_input) - sum(empty_output)

    @property
    def all_objects(self) -> int:
        return self.objects + self.empty_inputs + self.empty_outputs


class RecordStore:
    """One JSON record per finished image in `<work>/records/<sha256 of its key>.json`, each written
    atomically: a fixed-length name, whatever the image's path. A record holds the image's key, the
    fingerprints of its input files (samrefiner.run.fingerprints), its scores and its output."""

    def __init__(self, work_dir: Path) -> None:
        self.folder = work_dir / "records"

    def finished(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that have a record."""
        if not self.folder.is_dir():
            return set()
        present = {entry.name for entry in os.scandir(self.folder)}
        return {key for key in keys if self._path(key).name in present}

    def put(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps({"key": key, **record}, separators=(",", ":"))
        atomic_write(self._path(key), lambda handle: handle.write(text.encode("utf-8")))

    def drop(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def read(self, keys: Iterable[str], part: str) -> Records:
        """`part` ("output" or "scores") of the records of those keys that have one, in the order
        given; each read from its file when it is looked up, so a merge holds one at a time."""
        keys = list(keys)
        finished = self.finished(keys)
        return Records(self, [key for key in keys if key in finished], part)

    def load(self, key: str) -> dict[str, Any]:
        return json.loads(self._path(key).read_text(encoding="utf-8"))

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"


class Records(Mapping[str, Any]):
    """Image key -> one part of its record, read from disk on each lookup (nothing is kept)."""

    def __init__(self, store: RecordStore, keys: list[str], part: str) -> None:
        self.store, self._keys, self._known, self.part = store, keys, set(keys), part

    def __getitem__(self, key: str) -> Any:
        if key not in self._known:
            raise KeyError(key)
        return self.store.load(key)[self.part]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class ErrorLog:
    """One line per failed image (`<file>: <cause>`), flushed as it happens."""

    path: Path
    entries: list[tuple[str, str]] = field(default_factory=list)  # (image key, line) as written
    _handle: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path.unlink(missing_ok=True)  # lines of an earlier run would be stale

    def add(self, ref: SampleRef, error: BaseException) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        line = describe_failure(ref, error)
        self._handle.write(line + "\n")
        self._handle.flush()
        self.entries.append((ref.key, line))

    @property
    def count(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def describe_failure(ref: SampleRef, error: BaseException) -> str:
    """One line: our errors already name their file; anything else is prefixed with the image."""
    if isinstance(error, SamRefinerError):
        text = str(error)
    else:
        text = f"{ref.name}: {type(error).__name__}: {error}"
    return " ".join(text.split())


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


def write_and_record(dataset: Dataset, store: RecordStore, sample: Sample, result: Any, overlays: Path | None) -> None:
    """Write one image's outputs, then its record (the mark of a finished image)."""
    store.put(sample.ref.key, {"inputs": sample.inputs, **_write_one(dataset, sample, result, overlays)})


class InlineWrites:
    """Writes each image as it is submitted; failures and successes come back in submission order
    from `settled` (a subclass may write elsewhere and settle later, in the same order)."""

    def __init__(self, dataset: Dataset, store: RecordStore, overlays: Path | None) -> None:
        self.dataset, self.store, self.overlays = dataset, store, overlays
        self.pending: deque[tuple[SampleRef, Any, Future]] = deque()  # (ref, result or None, write)

    def submit(self, sample: Sample, result: Any) -> None:
        self.pending.append((sample.ref, result, self._start(sample, result)))

    def fail(self, ref: SampleRef, error: Exception) -> None:
        failed: Future = Future()
        failed.set_exception(error)
        self.pending.append((ref, None, failed))

    def settled(self, wait: bool = False) -> Iterator[tuple[SampleRef, Any, Exception | None]]:
        """(ref, result, error or None) of the finished head of the queue (all of it with `wait`)."""
        while self.pending and (wait or self.pending[0][2].done()):
            ref, result, future = self.pending.popleft()
            with stage("write"):
                error = future.exception()
            yield ref, result, error

    def close(self) -> None:
        """Called once the run ends, normally or not."""

    def _start(self, sample: Sample, result: Any) -> Future:
        done: Future = Future()
        try:
            with stage("write"):
                write_and_record(self.dataset, self.store, sample, result, self.overlays)
            done.set_result(None)
        except Exception as error:  # noqa: BLE001  (recorded, and the run goes on)
            done.set_exception(error)
        return done


Writer = Callable[[Dataset, RecordStore, "Path | None"], InlineWrites]


def select(refs: list[SampleRef], shard: Shard, limit: int | None) -> list[SampleRef]:
    """This shard's images, at most `limit` of them."""
    chosen = shard.select(refs)
    return chosen if limit is None else chosen[:limit]


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


def _write_one(dataset: Dataset, sample: Sample, result: Any, overlays: Path | None) -> dict[str, Any]:
    """Write one image's refined masks; return its record (scores and the format's own extras)."""
    output = dataset.write(sample, result)
    if overlays is not None:
        from samrefiner.io.overlays import write_overlay

        write_overlay(overlays / f"{sample.ref.key}.png", sample.image, sample.masks, result.masks)
    return {"scores": _scores_line(dataset, sample, result), "output": output}


def _scores_line(dataset: Dataset, sample: Sample, result: Any) -> dict[str, Any]:
    objects = [
        {
            **meta,
            "predicted_iou": _number_or_none(result.scores[index]),
            "chosen": int(result.chosen[index]),
            "empty_input": bool(result.empty_input[index]),
            "empty_output": bool(result.empty_output[index]),
            "box_expanded": bool(result.prompts.box_expanded[index]),
        }
        for index, meta in enumerate(sample.objects)
    ]
    return {
        "image": sample.ref.key,
        "file": Path(os.path.relpath(sample.image_path, dataset.images)).as_posix(),
        "objects": objects,
    }


def _number_or_none(value: float) -> float | None:
    """JSON has no NaN: an object that kept its coarse mask has no predicted IoU (null)."""
    return None if math.isnan(value) else float(value)


def merge_outputs(dataset: Dataset) -> None:
    """Merge every finished image's record (from this and earlier runs, all shards) into the
    dataset's output and the scores file."""
    store = RecordStore(dataset.layout.work_dir)
    keys = [ref.key for ref in dataset.refs()]
    dataset.finalize(store.read(keys, "output"))
    lines = ((json.dumps(scores) + "\n").encode("utf-8") for scores in store.read(keys, "scores").values())
    atomic_write(dataset.layout.scores_path, lambda handle: handle.writelines(lines))


def shard_path(path: Path, shard: Shard) -> Path:
    """`path` with the shard's suffix before its extension (unchanged when unsharded)."""
    return path.with_name(path.stem + shard.suffix + path.suffix) if shard.suffix else path
