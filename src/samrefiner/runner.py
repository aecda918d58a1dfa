"""The batch loop of `samrefiner refine`: every image of a dataset through a refiner, resumably.

For each selected image: load it (image + coarse masks), refine, write its outputs (each file
atomically), then write its record into the work folder. The record is the mark of a finished
image: `--resume` skips images that have one, so a run killed at any point loses at most the
image in progress and never writes an image twice. An image that fails gives one line in the
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
images can be refined at once (samrefiner.overlap), results still taken in dataset order.

Run identity: given a `manifest` (see samrefiner.manifest), the run first claims the output: an
output of another run is refused (or removed with `overwrite`), so output never mixes two runs;
every file the run writes outside its work folder is listed in its journal.

Failure policy (samrefiner.failures): a failed image gets one line in the errors file and its
traceback in `<work>/failures.log`; bad inputs (`InputError`) never stop the run; the same other
exception type on `max_consecutive_failures` images in a row, or any device error (CUDA out of
memory, ...), stops it at once: `Summary.stopped` names the cause, finished work is merged and kept.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

from tqdm import tqdm

from samrefiner.errors import InputError, SamRefinerError
from samrefiner.failures import DEFAULT_MAX_CONSECUTIVE, FailureLog, FailurePolicy
from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.io.images import announcing_writes, atomic_write
from samrefiner.manifest import Journal, claim
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
        """'K/N' -> Shard(K, N) with 0 <= K < N."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"--shard {text}: expected K/N, e.g. 0/4") from None
        if not 0 <= index < count:
            raise InputError(f"--shard {text}: K must be in 0..N-1")
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
    """One JSON record per finished image in `<work>/records/`, each written atomically."""

    def __init__(self, work_dir: Path) -> None:
        self.folder = work_dir / "records"

    def finished(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {unquote(path.stem) for path in self.folder.glob("*.json")}

    def put(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps(record, separators=(",", ":"))
        atomic_write(self._path(key), lambda handle: handle.write(text.encode("utf-8")))

    def drop(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def read(self, keys: Iterable[str], part: str) -> Records:
        """`part` ("output" or "scores") of the records of those keys that have one, in the order
        given; each read from its file when it is looked up, so a merge holds one at a time."""
        finished = self.finished()
        return Records(self, [key for key in keys if key in finished], part)

    def load(self, key: str) -> dict[str, Any]:
        return json.loads(self._path(key).read_text(encoding="utf-8"))

    def _path(self, key: str) -> Path:
        return self.folder / f"{quote(key, safe='')}.json"


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
    """The decoded sample, or the exception that loading it raised (the "read" stage)."""
    with stage("read"):
        try:
            return dataset.load(ref)
        except Exception as error:  # noqa: BLE001  (recorded, and the run goes on)
            return error


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
    store.put(sample.ref.key, _write_one(dataset, sample, result, overlays))


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


def run(
    dataset: Dataset,
    refiner: Any,
    *,
    shard: Shard = Shard(),
    limit: int | None = None,
    resume: bool = False,
    errors_path: Path | None = None,
    overlays: Path | None = None,
    progress: bool = True,
    loader: Loader = load_in_order,
    merge: bool = True,
    writer: Writer = InlineWrites,
    manifest: dict[str, Any] | None = None,
    overwrite: bool = False,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE,
    stop_flag: Path | None = None,
    refining: Refining = refine_in_order,
) -> Summary:
    """Refine this shard's images of `dataset` with `refiner` (anything with `.refine(image, masks)`).

    `limit`: the first `limit` images of this shard. `manifest`: claim the output for this run first
    (samrefiner.manifest.claim with `resume` and `overwrite`). `merge=False` leaves merging the
    finished records into the output to a later `merge_outputs` (several processes writing one output
    merge once, after all of them are done). `stop_flag`: a file shared by the processes of one run;
    a process that stops writes its cause there, the others stop after their current image.
    `refining`: how loaded images become results (`refine_in_order`, or samrefiner.overlap's two at a
    time); an image still in flight when the run stops is dropped (no output, no record).
    """
    policy = FailurePolicy(max_consecutive_failures)
    if manifest is not None:
        claim(dataset.layout, manifest, resume=resume, overwrite=overwrite)
    all_refs = dataset.refs()
    chosen = select(all_refs, shard, limit)
    store = RecordStore(dataset.layout.work_dir)
    finished = store.finished() if resume else set()
    todo = [ref for ref in chosen if ref.key not in finished]
    journal = Journal(dataset.layout, shard.suffix)
    journal.add(errors_path or shard_path(dataset.layout.errors_path, shard))
    errors = ErrorLog(errors_path or shard_path(dataset.layout.errors_path, shard))
    tracebacks = FailureLog(dataset.layout.work_dir / "failures.log")
    summary = Summary(skipped=len(chosen) - len(todo), errors_path=errors.path)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    writes = writer(dataset, store, overlays)

    def settle(finished: Iterable[tuple[SampleRef, Any, Exception | None]]) -> None:
        """Count written images; record failed ones (the failure policy may stop the run)."""
        for ref, result, error in finished:
            if error is None:
                summary.images += 1
                summary.count_objects(result)
                policy.succeeded()
                continue
            store.drop(ref.key)
            errors.add(ref, error)
            tracebacks.add(ref.name, error)
            cause = policy.failed(ref.name, error)
            if cause and summary.stopped is None:
                summary.stopped = cause
                if stop_flag is not None:
                    atomic_write(stop_flag, lambda handle: handle.write(cause.encode("utf-8")))

    try:
        with announcing_writes(journal.add), closing(refining(refiner, loader(dataset, todo))) as outcomes:
            for ref, loaded, outcome in outcomes:
                try:
                    if isinstance(outcome, Exception):
                        raise outcome
                    writes.submit(cast(Sample, loaded), outcome)  # loaded, since refined
                except Exception as error:  # noqa: BLE001  (recorded; the failure policy decides)
                    writes.fail(ref, error)
                settle(writes.settled())
                bar.set_postfix_str(f"{summary.all_objects / (time.perf_counter() - start):.1f} objects/s", refresh=False)
                bar.update(1)
                if summary.stopped is None and stop_flag is not None and stop_flag.exists():
                    summary.stopped = stop_flag.read_text(encoding="utf-8")
                if summary.stopped:
                    break
            settle(writes.settled(wait=True))  # images refined before a stop are written and kept
    finally:
        writes.close()
        bar.close()
        errors.close()
    summary.failures, summary.failed = errors.count, errors.entries
    if merge:
        with stage("write"), announcing_writes(journal.add):
            merge_outputs(dataset)
    summary.seconds = time.perf_counter() - start
    return summary


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
