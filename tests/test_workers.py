"""`refine --workers N`: reading and writing in worker processes leave the same bytes as without;
the summary gives the share of the time the model waited, by cause."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import DATA
from io_fakes import BoxRefiner
from test_distributed import coco_ground_truth
from test_io_coco import build_coco
from test_refine_cli import FAST, load_the_model_once, run_cli  # noqa: F401  (the fixture loads the model once)

from samrefiner.io.coco import CocoDataset
from samrefiner.io.datasets import LabelMaps
from samrefiner.loader import Workers
from samrefiner.runner import Summary, run
from samrefiner.timing import StageTimes, idle_shares

STUFF = DATA / "coco_stuff"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _files(root: Path) -> dict[str, str]:
    """SHA-256 of every file a run wrote: under the folder `root`, or beside the .json `root`
    (`a.json`, `a.scores.jsonl`, `a.work/...`, named without the `a`)."""
    if root.suffix == ".json":
        paths = [path for path in sorted(root.parent.rglob("*")) if path.relative_to(root.parent).parts[0].startswith(root.stem + ".")]
        names = [path.relative_to(root.parent).as_posix()[len(root.stem):] for path in paths]
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


def _run_both_ways(make_dataset, out0: Path, out2: Path, workers: int) -> None:
    plain = run(make_dataset(out0), BoxRefiner(), progress=False)
    dataset = make_dataset(out2)
    pool = Workers(dataset, workers)
    try:
        parallel = run(dataset, BoxRefiner(), progress=False, loader=pool.loader, writer=pool.writer)
    finally:
        pool.close()
    assert (plain.images, plain.objects, plain.failures) == (parallel.images, parallel.objects, parallel.failures)
    assert plain.images >= 2 and plain.failures == 0


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
        assert "missing.jpg" in (tmp_path / f"{out}.work" / "failures.log").read_text()


def test_refine_with_workers_prints_where_the_model_waited(tmp_path, capsys, monkeypatch) -> None:
    code, printed, _ = run_cli(capsys, monkeypatch, "refine", *FAST, "--images", STUFF / "imgs", "--label-maps",
                               STUFF / "pngs", "--out", tmp_path / "out", "--limit", "1", "--workers", "1")
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
