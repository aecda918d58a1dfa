"""eval, review, apply-review and corrupt on YOLO segmentation datasets (no model: fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from test_io_yolo import build_yolo, iou, read_with_supervision
from test_refine_cli import run_cli
from test_review import read_manifest
from test_review_datasets import write_decisions

from io_fakes import BoxRefiner, box_mask, tree_digest
from samrefiner.io.yolo import YoloDataset
from samrefiner.run.runner import run

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture()
def boxed(tmp_path):
    """A YOLO dataset (its val/0.txt starting with a blank line: refine must not shift the lines)
    and its `refine` output where every mask became its bounding box."""
    source, out = tmp_path / "yolo", tmp_path / "boxed"
    build_yolo(source, stems=("0",))
    label = source / "labels" / "val" / "0.txt"
    label.write_text("\n" + label.read_text())
    run(YoloDataset(source, out), BoxRefiner(), progress=False)
    return source, out


def test_eval_pairs_objects_by_file_and_line(boxed, tmp_path, capsys, monkeypatch):
    source, out = boxed
    dataset = YoloDataset(source, tmp_path / "unused")
    truth = [mask for ref in dataset.refs() for mask in dataset.load(ref).masks]
    expected = np.mean([iou(mask, box_mask(mask)) for mask in truth])
    code, _, _ = run_cli(capsys, monkeypatch, "eval", "--gt", source, "--pred", out, "--json", tmp_path / "s.json")
    scores = json.loads((tmp_path / "s.json").read_text())
    assert code == 0 and scores["count"] == len(truth)
    assert scores["mean_iou"] == pytest.approx(expected, abs=1e-9)
    label = out / "labels" / "val" / "0.txt"
    label.write_text("\n".join(label.read_text().splitlines()[2:]) + "\n")  # the blank line and an object lost
    monkeypatch.setenv("COLUMNS", "400")  # one line per problem
    code, stdout, _ = run_cli(capsys, monkeypatch, "eval", "--gt", source, "--pred", out, "--format", "yolo")
    assert code == 1 and f"{label}: " in stdout and "differ from the ground truth's" in stdout


def test_review_and_apply_review_write_a_yolo_dataset(boxed, tmp_path, capsys, monkeypatch):
    source, out = boxed
    code, stdout, _ = run_cli(
        capsys,
        monkeypatch,
        "review",
        "--images",
        source,
        "--coarse",
        source,
        "--refined",
        out,
        "--out",
        tmp_path / "report",
    )
    assert code == 0 and "(yolo)" in stdout and (tmp_path / "report" / "index.html").is_file()
    report_id = read_manifest(tmp_path / "report")["reportId"]
    write_decisions(tmp_path / "decisions.json", report_id, ("images/val/0", "2", "reject"))  # line 2: the first object
    final = tmp_path / "final"
    code, _, _ = run_cli(
        capsys,
        monkeypatch,
        "apply-review",
        "--decisions",
        tmp_path / "decisions.json",
        "--images",
        source,
        "--coarse",
        source,
        "--refined",
        out,
        "--out",
        final,
    )
    assert code == 0
    assert yaml.safe_load((final / "data.yaml").read_text())["path"] == str(final.resolve())
    coarse = YoloDataset(source, tmp_path / "unused")
    sample = coarse.load(next(ref for ref in coarse.refs() if ref.key == "images/val/0"))
    (_, first), *others = read_with_supervision(final, source)["val/0"]
    np.testing.assert_array_equal(first, sample.masks[0])  # line 2 rejected: coarse
    for (_, mask), coarse_mask in zip(others, sample.masks[1:], strict=True):
        np.testing.assert_array_equal(mask, box_mask(coarse_mask))  # accepted by default: refined
    assert (final / "labels" / "val" / "0.txt").read_text().startswith("\n")


def test_corrupt_writes_a_flawed_yolo_dataset(tmp_path, capsys, monkeypatch):
    source = tmp_path / "yolo"
    build_yolo(source, stems=("1",), davis=False)
    before = tree_digest(source)
    code, _, _ = run_cli(
        capsys, monkeypatch, "corrupt", "--images", source, "--gt", source, "--out", tmp_path / "flawed"
    )
    assert code == 0 and tree_digest(source) == before
    report = json.loads((tmp_path / "flawed" / "corrupt.json").read_text())
    truth = YoloDataset(source, tmp_path / "unused")
    flawed = YoloDataset(tmp_path / "flawed", tmp_path / "unused", image_root=source)
    assert [ref.key for ref in flawed.refs()] == [ref.key for ref in truth.refs()] == ["images/val/1"]
    sample, written = truth.load(truth.refs()[0]), flawed.load(flawed.refs()[0])
    assert [meta["category_id"] for meta in written.objects] == [meta["category_id"] for meta in sample.objects]
    for meta, mask, flawed_mask in zip(sample.objects, sample.masks, written.masks):
        # the line read back holds its seams too: 13 pixels for object 1 (3 parts, 982 pixels) move
        # its IoU with the truth by 0.006 (inside the truth or not: the seams cross what was cut away)
        assert iou(mask, flawed_mask) == pytest.approx(report["objects"][f"images/val/1/{meta['id']}"]["iou"], abs=0.01)
