"""`samrefiner eval` reads predictions with the readers `samrefiner refine` reads datasets with:
a rule of a format's reader applies to eval's predictions too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_refine_cli import run_cli

from samrefiner.errors import InputError
from samrefiner.io.images import write_png
from samrefiner.io.yolo import YoloDataset

SQUARE = "1 0.1 0.1 0.6 0.1 0.6 0.6 0.1 0.6"


def yolo_dataset(root: Path, names: list[str], line: str = SQUARE, image: bool = True) -> Path:
    """A one-image YOLO dataset (`val`), its label file one line; without its image when `image` is False."""
    if image:
        write_png(root / "images" / "val" / "a.png", np.full((20, 20, 3), 90, np.uint8))
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "a.txt").write_text(line + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"val": "images/val", "names": names}))
    return root


def test_a_yolo_prediction_that_refine_would_refuse_is_unusable_in_eval(tmp_path, capsys, monkeypatch):
    """Before: eval read the prediction's label lines without its data.yaml, so class 1 of a
    one-class prediction was scored (IoU 1) though refine's reader refuses it."""
    gt = yolo_dataset(tmp_path / "gt", ["a", "b"])
    pred = yolo_dataset(tmp_path / "pred", ["a"], image=False)  # its images: the ground truth's
    reader = YoloDataset(pred, tmp_path / "unused", image_root=gt)
    with pytest.raises(InputError) as refused:
        reader.load(reader.refs()[0])
    scores_path = tmp_path / "scores.json"
    code, _, _ = run_cli(capsys, monkeypatch, "eval", "--gt", gt, "--pred", pred, "--json", scores_path)
    scores = json.loads(scores_path.read_text())
    assert code == 1 and scores["unusable"] == [str(refused.value)]
    assert "outside the 1 classes of data.yaml" in str(refused.value) and scores["iou"] == 0.0


def test_a_yolo_prediction_is_read_as_a_dataset_with_its_data_yaml(tmp_path, capsys, monkeypatch):
    """Before: a prediction folder without data.yaml was scored; refine cannot read it as YOLO."""
    gt = yolo_dataset(tmp_path / "gt", ["a", "b"])
    pred = yolo_dataset(tmp_path / "pred", ["a", "b"], image=False)
    code, stdout, _ = run_cli(capsys, monkeypatch, "eval", "--gt", gt, "--pred", pred, "--format", "yolo")
    assert code == 0 and "1.0000" in stdout
    (pred / "data.yaml").unlink()
    code, _, stderr = run_cli(capsys, monkeypatch, "eval", "--gt", gt, "--pred", pred, "--format", "yolo")
    assert code == 2 and stderr.strip().splitlines() == [
        f"samrefiner: error: {pred / 'data.yaml'}: not found (a YOLO dataset folder needs its data.yaml)"
    ]
