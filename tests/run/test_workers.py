"""`refine --workers N`: reading and writing in worker processes, and two images in flight around
the model (samrefiner.run.overlap), leave the same bytes as without; the summary gives the share of the
time the model waited, by cause."""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest
from test_distributed import coco_ground_truth
from test_io_coco import build_coco
from test_io_runner import make_dataset
from test_refine_cli import FAST, MODEL, load_the_model_once, run_cli  # noqa: F401  (the fixture loads the model once)

import samrefiner.models
from conftest import DATA
from io_fakes import BoxRefiner, IdentityRefiner, fake_result
from samrefiner import Refiner, RefinerConfig
from samrefiner.io.coco import CocoDataset
from samrefiner.io.labelmaps import LabelMaps
from samrefiner.io.masks import MaskFolders
from samrefiner.run.loader import Workers
from samrefiner.run.overlap import ModelTurns, refine_overlapped
from samrefiner.run.runner import refine_in_order, run
from samrefiner.run.shards import Shard
from samrefiner.run.summary import Summary
from samrefiner.timing import StageTimes, idle_shares, recording, stage

STUFF = DATA / "coco_stuff"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _files(root: Path) -> dict[str, str]:
    """SHA-256 of every file a run wrote: under the folder `root`, or beside the .json `root`
    (`a.json`, `a.scores.jsonl`, `a.work/...`, named without the `a`)."""
    if root.suffix == ".json":
        paths = [
            path
            for path in sorted(root.parent.rglob("*"))
            if path.relative_to(root.parent).parts[0].startswith(root.stem + ".")
        ]
        names = [path.relative_to(root.parent).as_posix()[len(root.stem) :] for path in paths]
    else:
        paths = sorted(root.rglob("*"))
        names = [path.relative_to(root).as_posix() for path in paths]
    return {
        name: hashlib.sha256(path.read_bytes()).hexdigest()
        for name, path in zip(names, paths)
        # per-process bookkeeping: journals (see _journaled) and tracebacks (timed; checked apart)
        if path.is_file() and not path.name.startswith("written") and path.name != "failures.log"
    }


def _journaled(work_dir: Path) -> set[str]:
    """The files listed by every journal of a run (one per process: the main one and each worker)."""
    return {line for journal in work_dir.glob("written*.txt") for line in journal.read_text().split()}


def _run_both_ways(
    make_dataset, out0: Path, out2: Path, workers: int, refiner=None, refining=refine_in_order, **options
) -> None:
    refiner = refiner or BoxRefiner()
    plain = run(make_dataset(out0), refiner, progress=False, **options)
    dataset = make_dataset(out2)
    pool = Workers(dataset, workers)
    try:
        parallel = run(
            dataset, refiner, progress=False, loader=pool.loader, writer=pool.writer, refining=refining, **options
        )
    finally:
        pool.close()
    assert (plain.images, plain.objects, plain.failures) == (parallel.images, parallel.objects, parallel.failures)
    assert plain.images >= 2 and plain.failures == 0


@pytest.fixture
def turns(monkeypatch) -> list[str]:
    """The thread that held the model, turn by turn (samrefiner.run.overlap's model lock); checks
    that no two turns overlap."""
    taken: list[str] = []
    holders: list[str] = []
    original = ModelTurns.__call__

    @contextmanager
    def logged(self):
        with original(self):
            assert not holders, f"{threading.current_thread().name} entered the model while {holders} held it"
            holders.append(threading.current_thread().name)
            taken.append(holders[0])
            time.sleep(0.001)  # a turn long enough for an unlocked second thread to enter
            try:
                yield
            finally:
                holders.pop()

    monkeypatch.setattr(ModelTurns, "__call__", logged)
    return taken


def _switches(turns: list[str]) -> int:
    return sum(before != after for before, after in zip(turns, turns[1:]))


def _reduced_sam() -> Refiner:
    """The reduced model with two cascade passes: mining between model calls of each image."""
    return Refiner(samrefiner.models.load_model(MODEL), RefinerConfig(iterations=2))


def test_label_maps_written_by_workers_are_byte_identical(tmp_path) -> None:
    def make(out: Path) -> LabelMaps:
        return LabelMaps(STUFF / "imgs", STUFF / "pngs", out)

    _run_both_ways(make, tmp_path / "a", tmp_path / "b", workers=2)
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b") and len(files) == 6 + 6 + 1  # maps, records, scores
    listed = _journaled(tmp_path / "a" / ".samrefiner")
    assert listed == _journaled(tmp_path / "b" / ".samrefiner") and len(listed) == 6 + 1 + 1  # maps, scores, errors


def test_coco_written_by_workers_is_byte_identical(tmp_path) -> None:
    images, path, _ = build_coco(tmp_path / "in")

    def make(out: Path) -> CocoDataset:
        return CocoDataset(images, path, out)

    _run_both_ways(make, tmp_path / "a.json", tmp_path / "b.json", workers=2)
    files = _files(tmp_path / "a.json")
    assert files == _files(tmp_path / "b.json") and ".json" in files and ".scores.jsonl" in files


def test_label_maps_refined_two_at_a_time_are_byte_identical(tmp_path, turns) -> None:
    """The reduced SAM, two passes: the two threads' model calls interleave (one image's turn
    between another's), and every written byte equals the one-at-a-time run's."""

    def make(out: Path) -> LabelMaps:
        return LabelMaps(STUFF / "imgs", STUFF / "pngs", out)

    _run_both_ways(make, tmp_path / "a", tmp_path / "b", 1, _reduced_sam(), refine_overlapped, shard=Shard(0, 5))
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b") and len(files) == 2 + 2 + 1  # maps (images 0 and 5), records, scores
    assert len(set(turns)) == 2 and _switches(turns) > 1  # one image at a time would switch once


def test_coco_refined_two_at_a_time_is_byte_identical(tmp_path, turns) -> None:
    images, path, _ = build_coco(tmp_path / "in", stems=("0", "5"))

    def make(out: Path) -> CocoDataset:
        return CocoDataset(images, path, out)

    _run_both_ways(make, tmp_path / "a.json", tmp_path / "b.json", 2, _reduced_sam(), refine_overlapped)
    files = _files(tmp_path / "a.json")
    assert files == _files(tmp_path / "b.json") and ".json" in files and ".scores.jsonl" in files
    assert len(set(turns)) == 2 and _switches(turns) > 1


class TurnTaker(IdentityRefiner):
    """Like the Refiner: 3 model calls (500 for the images in `slow`), each under `model_turn`, with
    mining in between; fails the images in `failing` (by index, read from the mask's column, see
    make_dataset)."""

    def __init__(self, failing: tuple[int, ...] = (), slow: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.failing, self.slow, self.model_turn = failing, slow, nullcontext

    def refine(self, image, masks):
        index = int(np.flatnonzero(masks[0].any(axis=0))[0]) - 4
        for _ in range(500 if index in self.slow else 3):
            with self.model_turn(), stage("decode"):
                time.sleep(0.01)
            with stage("mine"):
                time.sleep(0.01)
        if index in self.failing:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return fake_result(masks)


def test_the_failure_policy_stops_at_the_same_image_two_at_a_time(tmp_path) -> None:
    """Images 2..7 fail: the run stops after the fifth failure in a row (image 6) either way; the
    image in flight beside it (7) is dropped, not written."""
    images, masks = make_dataset(tmp_path, count=9)
    summaries = [
        run(
            MaskFolders(images, masks, tmp_path / name),
            TurnTaker(failing=tuple(range(2, 8))),
            progress=False,
            refining=refining,
        )
        for name, refining in (("a", refine_in_order), ("b", refine_overlapped))
    ]
    plain, overlapped = summaries
    assert plain.stopped and plain.stopped == overlapped.stopped and "img6" in plain.stopped
    assert (overlapped.images, overlapped.failures, overlapped.failed) == (plain.images, plain.failures, plain.failed)
    assert (plain.images, plain.failures) == (2, 5)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_an_interrupt_two_at_a_time_stops_the_threads(tmp_path, monkeypatch) -> None:
    """Ctrl-C in the consumer (here: while writing the first image) ends the run at once: the
    image in flight (a slow one) stops at its next model turn, no thread is left."""
    images, masks = make_dataset(tmp_path, count=6)

    def interrupted(self, sample, result):
        raise KeyboardInterrupt

    monkeypatch.setattr("samrefiner.run.writes.InlineWrites.submit", interrupted)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run(
            MaskFolders(images, masks, tmp_path / "out"),
            TurnTaker(slow=(1, 2)),
            progress=False,
            refining=refine_overlapped,
        )
    assert time.perf_counter() - start < 5  # 500 turns of 20 ms would take 10 s per slow image
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("samrefiner-refine")]


def test_idle_two_at_a_time_is_charged_to_what_the_model_waited_for(tmp_path) -> None:
    """Model stages never overlap (the sum of their seconds stays under the wall time), and the
    model's free time is charged to mining, what each thread did before its next turn."""
    images, masks = make_dataset(tmp_path, count=4)
    times = StageTimes()
    start = time.perf_counter()
    with recording(times):
        run(MaskFolders(images, masks, tmp_path / "out"), TurnTaker(), progress=False, refining=refine_overlapped)
    wall = time.perf_counter() - start
    assert times.calls["decode"] == 4 * 3 and times.model_seconds() < wall
    assert times.idle["mine"] > 0 and times.calls["wait for model"] == 4 * 3
    shares = idle_shares(times, wall)
    assert (
        shares["mining"] == pytest.approx(times.idle["mine"] / wall) and shares["mining"] < times.seconds["mine"] / wall
    )


def test_failures_come_back_in_dataset_order_with_workers(tmp_path) -> None:
    """The second image's file is missing: the same errors file and counts with and without workers."""
    path = coco_ground_truth(tmp_path)

    def make(out: Path) -> CocoDataset:
        return CocoDataset(STUFF / "imgs", path, out)

    plain = run(make(tmp_path / "a.json"), BoxRefiner(), progress=False)
    dataset = make(tmp_path / "b.json")
    pool = Workers(dataset, 2)
    try:
        parallel = run(dataset, BoxRefiner(), progress=False, loader=pool.loader, writer=pool.writer)
    finally:
        pool.close()
    assert (plain.images, plain.failures) == (parallel.images, parallel.failures) == (4, 1)
    assert plain.failed == parallel.failed and "missing.jpg" in plain.failed[0][1]
    files = _files(tmp_path / "a.json")
    assert files == _files(tmp_path / "b.json") and ".errors.txt" in files
    for out in ("a", "b"):  # the traceback of the failed image, logged by the process that read it
        logged = (tmp_path / f"{out}.work" / "failures.log").read_text()
        assert "missing.jpg" in logged and 'samrefiner/io/coco.py", line' in logged  # the stack where it failed


def test_refine_with_workers_prints_where_the_model_waited(tmp_path, capsys, monkeypatch) -> None:
    code, printed, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        STUFF / "imgs",
        "--label-maps",
        STUFF / "pngs",
        "--out",
        tmp_path / "out",
        "--limit",
        "1",
        "--workers",
        "1",
    )
    assert code == 0
    assert "1 images" in printed and "model idle" in printed and "reading" in printed and "mining" in printed


def test_idle_shares_split_the_time_outside_the_model() -> None:
    times = StageTimes()
    for name, seconds in {"encode": 5.0, "decode": 2.0, "wait for input": 0.5, "mine": 1.0, "write": 0.5}.items():
        times.add(name, seconds)
    shares = idle_shares(times, 10.0)
    assert shares == pytest.approx({"total": 0.3, "reading": 0.05, "mining": 0.1, "writing": 0.05, "other": 0.1})
    text = str(Summary(images=2, objects=4, seconds=10.0, idle=shares))
    assert "model idle 30% of the time (reading 5%, mining 10%, writing 5%, other 10%)" in text
