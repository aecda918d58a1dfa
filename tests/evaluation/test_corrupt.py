"""Flawed masks: IoU with the ground truth in [0.75, 0.85], reproducible from the seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import DATA
from samrefiner.cli import app
from samrefiner.evaluation.corrupt import IOU_BAND, MAX_DEFECTS, corrupt_mask, object_rng
from samrefiner.evaluation.metrics import mask_iou
from samrefiner.io.images import read_image, read_mask

CASES = [
    ("davis2016/JPEGImages/dog/00020.jpg", "davis2016/Annotations/dog/00020.png"),
    ("davis2016/JPEGImages/car-roundabout/00000.jpg", "davis2016/Annotations/car-roundabout/00000.png"),
    ("grabcut/images/llama.png", "grabcut/gt/llama.png"),
    ("grabcut/images/fullmoon.png", "grabcut/gt/fullmoon.png"),
]


@pytest.mark.parametrize("image_file, gt_file", CASES)
def test_flawed_mask_lands_in_band_and_repeats(image_file, gt_file):
    image, gt = read_image(DATA / image_file), read_mask(DATA / gt_file)
    first = corrupt_mask(image, gt, object_rng(5, gt_file))
    assert first.in_band
    assert IOU_BAND[0] <= mask_iou(gt, first.mask) <= IOU_BAND[1]
    assert first.iou == pytest.approx(mask_iou(gt, first.mask))
    assert 1 <= first.defects <= MAX_DEFECTS
    again = corrupt_mask(image, gt, object_rng(5, gt_file))
    assert np.array_equal(first.mask, again.mask)


def test_other_seed_gives_other_mask():
    image, gt = read_image(DATA / CASES[2][0]), read_mask(DATA / CASES[2][1])
    first = corrupt_mask(image, gt, object_rng(5, "llama"))
    assert not np.array_equal(first.mask, corrupt_mask(image, gt, object_rng(6, "llama")).mask)
    assert not np.array_equal(first.mask, corrupt_mask(image, gt, object_rng(5, "llama2")).mask)


def test_unreachable_band_gives_closest_mask_and_says_so():
    image = np.random.default_rng(0).integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    speck = np.zeros((60, 80), bool)
    speck[30, 40] = True  # any superpixel change takes a 1-px object to IoU <= 0.5
    result = corrupt_mask(image, speck, object_rng(0, "speck"))
    assert not result.in_band
    assert result.iou == 1.0 and np.array_equal(result.mask, speck)
    empty = corrupt_mask(image, np.zeros((60, 80), bool), object_rng(0, "empty"))
    assert not empty.in_band and not empty.mask.any()


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def linked_subset(tmp_path, frames=("00000", "00030")):
    """Two DAVIS frames (symlinks, nothing copied): images/<frame>.jpg and gt/<frame>.png."""
    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    for frame in frames:
        (images / f"{frame}.jpg").symlink_to(DATA / f"davis2016/JPEGImages/blackswan/{frame}.jpg")
        (gt / f"{frame}.png").symlink_to(DATA / f"davis2016/Annotations/blackswan/{frame}.png")
    return images, gt


def test_cli_writes_same_files_for_same_seed_and_leaves_inputs_alone(runner, tmp_path):
    images, gt = linked_subset(tmp_path)
    before = {path.name: path.read_bytes() for path in gt.iterdir()}
    outputs = []
    for name in ("a", "b"):
        result = runner.invoke(
            app, ["corrupt", "--images", str(images), "--gt", str(gt), "--out", str(tmp_path / name), "--seed", "11"]
        )
        assert result.exit_code == 0, result.output
        outputs.append({path.name: path.read_bytes() for path in (tmp_path / name).iterdir()})
    assert outputs[0] == outputs[1]
    assert sorted(outputs[0]) == sorted(before) + ["corrupt.json"]
    report = json.loads(outputs[0]["corrupt.json"])
    assert report["seed"] == 11 and len(report["objects"]) == len(before)
    for name in before:
        flawed = read_mask(tmp_path / "a" / name)
        iou = mask_iou(read_mask(gt / name), flawed)
        assert IOU_BAND[0] <= iou <= IOU_BAND[1]
        assert report["objects"][f"{name[:-4]}/{name}"]["iou"] == pytest.approx(iou, abs=1e-6)
    assert {path.name: path.read_bytes() for path in gt.iterdir()} == before


def test_cli_refuses_output_inside_the_inputs(runner, tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    result = runner.invoke(app, ["corrupt", "--images", str(tmp_path), "--gt", str(gt), "--out", str(gt / "flawed")])
    assert result.exit_code != 0
    assert "overlap" in str(result.exception)


def test_grabcut_band_is_void_for_the_iou_targets(runner, tmp_path):
    """GrabCut's 128 band is void: the object is the certain one and IoUs leave the band out."""
    from PIL import Image

    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    (images / "fullmoon.png").symlink_to(DATA / "grabcut/images/fullmoon.png")
    (gt / "fullmoon.png").symlink_to(DATA / "grabcut/gt/fullmoon.png")
    result = runner.invoke(app, ["corrupt", "--images", str(images), "--gt", str(gt), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    values = np.asarray(Image.open(gt / "fullmoon.png"))
    certain, void = values == 255, values == 128
    flawed = read_mask(tmp_path / "out" / "fullmoon.png")
    record = json.loads((tmp_path / "out" / "corrupt.json").read_text())["objects"]["fullmoon/fullmoon.png"]
    iou = mask_iou(certain, flawed, void)
    assert record["iou"] == pytest.approx(iou, abs=1e-6) and IOU_BAND[0] <= iou <= IOU_BAND[1]
    assert iou != pytest.approx(mask_iou(values >= 128, flawed), abs=1e-3)
