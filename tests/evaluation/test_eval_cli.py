"""`samrefiner eval` on small hand-made datasets in the three layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import DATA
from samrefiner.cli import app
from samrefiner.errors import InputError
from samrefiner.io.images import write_png
from samrefiner.io.labelmaps import write_label_map
from samrefiner.io.rle import encode_mask


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def run_eval(runner: CliRunner, tmp_path: Path, gt: Path, pred: Path, *extra: str, exit_code: int = 0) -> dict:
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["eval", "--gt", str(gt), "--pred", str(pred), "--json", str(out), *extra])
    assert result.exit_code == exit_code, result.output
    return json.loads(out.read_text())


def square(top: int, left: int, side: int, shape=(10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def test_masks_layout_pools_iou_and_scores_missing_as_empty(runner, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_png(gt / "img1" / "0.png", square(0, 0, 4))  # 16 px
    write_png(gt / "img1" / "1.png", square(5, 5, 2))  # 4 px
    write_png(gt / "img2" / "0.png", square(2, 2, 3))  # 9 px
    write_png(pred / "img1" / "0.png", square(0, 2, 4))  # I 8, U 24
    write_png(pred / "img1" / "1.png", square(5, 5, 2))  # I 4, U 4
    scores = run_eval(runner, tmp_path, gt, pred)  # img2/0.png is missing: I 0, U 9
    assert scores["count"] == 3
    assert scores["iou"] == pytest.approx(12 / 37)
    assert scores["mean_iou"] == pytest.approx((8 / 24 + 1 + 0) / 3)
    assert {"boundary_iou", "mba"} <= scores.keys()
    assert scores["missing"] == [str(pred / "img2" / "0.png")]


def test_unusable_prediction_is_scored_empty_and_named(runner, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_png(gt / "a" / "0.png", square(0, 0, 4))
    write_png(gt / "a" / "1.png", square(0, 0, 4))
    (pred / "a").mkdir(parents=True)
    (pred / "a" / "0.png").write_bytes(b"not a png")
    write_png(pred / "a" / "1.png", square(0, 0, 4, shape=(12, 10)))
    scores = run_eval(runner, tmp_path, gt, pred, "--format", "masks", exit_code=1)
    assert scores["iou"] == 0.0
    assert len(scores["unusable"]) == 2
    assert "0.png" in scores["unusable"][0] and "differs" in scores["unusable"][1]


def test_flat_folder_of_binary_masks_with_format_masks(runner, tmp_path):
    gt = DATA / "davis2016" / "Annotations" / "blackswan"
    scores = run_eval(runner, tmp_path, gt, gt, "--format", "masks")
    assert scores["count"] == 5
    assert all(scores[key] == 1.0 for key in ("iou", "mean_iou", "boundary_iou", "mba"))


def test_label_maps_miou_by_hand(runner, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_label_map(gt / "m.png", np.array([[0, 0, 1, 1], [0, 0, 1, 255]], dtype=np.uint8))
    write_label_map(pred / "m.png", np.array([[0, 1, 1, 1], [0, 0, 2, 2]], dtype=np.uint8))
    write_label_map(gt / "n.png", np.array([[3, 3]], dtype=np.uint8))
    scores = run_eval(runner, tmp_path, gt, pred)  # detected as label maps; n.png missing -> background
    # class 0: TP 3, FN 1, FP 2 (n.png) -> 3/6; class 1: 2/4; class 2: 0; class 3: 0 of 2
    assert scores["miou"] == pytest.approx((3 / 6 + 2 / 4 + 0 + 0) / 4)
    assert scores["count"] == 2
    assert scores["missing"] == [str(pred / "n.png")]


def coco_file(path: Path, masks: list[np.ndarray], ids: list[int], results: bool = False, scores=None) -> Path:
    height, width = masks[0].shape
    annotations = [
        {"id": i, "image_id": 1, "category_id": 1, "segmentation": encode_mask(mask > 0), "iscrowd": 0}
        for i, mask in zip(ids, masks)
    ]
    if scores is not None:
        for annotation, score in zip(annotations, scores):
            annotation["score"] = score
    document = (
        [{key: a[key] for key in ("image_id", "category_id", "segmentation", "score")} for a in annotations]
        if results
        else {"images": [{"id": 1, "file_name": "x.png", "height": height, "width": width}], "annotations": annotations}
    )
    path.write_text(json.dumps(document))
    return path


def test_coco_perfect_prediction_scores_one(runner, tmp_path):
    masks = [square(0, 0, 8, (40, 40)), square(20, 20, 12, (40, 40))]
    gt = coco_file(tmp_path / "gt.json", masks, [7, 9])
    scores = run_eval(runner, tmp_path, gt, gt)
    assert scores["count"] == 2
    for key in ("ap", "boundary_ap", "iou", "mean_iou", "boundary_iou", "mba"):
        assert scores[key] == pytest.approx(1.0), key


def test_coco_matches_by_annotation_id_and_results_lists_give_ap(runner, tmp_path):
    masks = [square(0, 0, 8, (40, 40)), square(20, 20, 12, (40, 40))]
    gt = coco_file(tmp_path / "gt.json", masks, [7, 9])
    # id 9 predicted exactly, id 7 missing: AP counts one of two objects, IoU is pooled over both
    pred = coco_file(tmp_path / "pred.json", [masks[1]], [9])
    scores = run_eval(runner, tmp_path, gt, pred)
    assert scores["iou"] == pytest.approx(144 / (144 + 64))
    assert scores["missing"] == [f"{pred}: annotation id 7"]
    assert 0.4 < scores["ap"] < 0.6 and scores["boundary_ap"] == pytest.approx(scores["ap"])
    listed = coco_file(tmp_path / "results.json", masks, [1, 2], results=True, scores=[0.9, 0.8])
    scores = run_eval(runner, tmp_path, gt, listed, "--format", "coco")
    assert scores["ap"] == pytest.approx(1.0) and "iou" not in scores


def test_bad_files_give_one_line_naming_them(runner, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    result = runner.invoke(app, ["eval", "--gt", str(broken), "--pred", str(broken)])
    assert isinstance(result.exception, InputError)
    assert str(broken) in str(result.exception) and "\n" not in str(result.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["eval", "--gt", str(empty), "--pred", str(empty)])
    assert isinstance(result.exception, InputError) and str(empty) in str(result.exception)
    no_size = tmp_path / "no_size.json"
    no_size.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    result = runner.invoke(app, ["eval", "--gt", str(no_size), "--pred", str(no_size)])
    assert isinstance(result.exception, InputError) and "'height'" in str(result.exception)


def test_unusable_coco_prediction_is_listed(runner, tmp_path):
    masks = [square(0, 0, 8, (40, 40))]
    gt = coco_file(tmp_path / "gt.json", masks, [7])
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": 1, "segmentation": encode_mask(masks[0] > 0)}]))
    scores = run_eval(runner, tmp_path, gt, pred, exit_code=1)
    assert scores["ap"] == 0.0
    assert scores["unusable"] == [f"{pred}: annotation #0: has no 'category_id'"]


GRABCUT = DATA / "grabcut"


def grabcut_predictions(folder: Path, lowest: int) -> Path:
    """Every GrabCut ground truth as a 0/255 prediction of its pixels >= `lowest`."""
    from PIL import Image

    for path in sorted((GRABCUT / "gt").glob("*.png")):
        values = np.asarray(Image.open(path))
        write_png(folder / path.name, np.where(values >= lowest, 255, 0).astype(np.uint8))
    return folder


def test_grabcut_uncertain_band_is_void_so_the_certain_object_scores_one(runner, tmp_path):
    """RITM's GrabCut protocol and CascadePSP: 128 is "don't know", left out of every score."""
    certain = grabcut_predictions(tmp_path / "certain", 255)
    scores = run_eval(runner, tmp_path, GRABCUT / "gt", certain, "--format", "masks")
    assert scores["count"] == 20
    assert {key: scores[key] for key in ("iou", "mean_iou", "boundary_iou", "mba")} == dict.fromkeys(
        ("iou", "mean_iou", "boundary_iou", "mba"), 1.0
    )
    with_band = grabcut_predictions(tmp_path / "with_band", 128)  # the band is void: no pixel counts
    scores = run_eval(runner, tmp_path, GRABCUT / "gt", with_band, "--format", "masks")
    assert scores["iou"] == 1.0 and scores["mean_iou"] == 1.0


def test_explicit_void_value_by_hand(runner, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    truth = square(2, 2, 4)  # 16 px object
    truth[1, 2:6] = 100  # a 4-px void row above it
    write_png(gt / "a" / "0.png", truth)
    write_png(pred / "a" / "0.png", square(1, 2, 5))  # 25 px: the object, the void row and 5 px more
    scores = run_eval(runner, tmp_path, gt, pred, "--format", "masks", "--void", "100")
    assert scores["iou"] == pytest.approx(16 / 21)
    result = runner.invoke(app, ["eval", "--gt", str(gt), "--pred", str(pred), "--void", "grey"])
    assert isinstance(result.exception, InputError) and "--void grey" in str(result.exception)


def test_void_none_makes_255_a_class_of_label_maps(runner, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_label_map(gt / "m.png", np.array([[0, 0, 1, 255]], dtype=np.uint8))
    write_label_map(pred / "m.png", np.array([[0, 1, 1, 1]], dtype=np.uint8))
    # default void 255: class 0 1/2, class 1 1/2; none: class 0 1/2, class 1 1/3, class 255 0
    assert run_eval(runner, tmp_path, gt, pred)["miou"] == pytest.approx(1 / 2)
    assert run_eval(runner, tmp_path, gt, pred, "--void", "none")["miou"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)


def test_masks_non_trivial_scores_by_hand(runner, tmp_path):
    """The shifted block of test_metrics (IoU 90/110, boundary IoU 18/54, mBA 56/76) through files."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_png(gt / "img" / "0.png", square(5, 5, 10, shape=(20, 20)))
    write_png(pred / "img" / "0.png", square(5, 6, 10, shape=(20, 20)))
    scores = run_eval(runner, tmp_path, gt, pred)
    assert scores["iou"] == pytest.approx(90 / 110)
    assert scores["boundary_iou"] == pytest.approx(18 / 54)
    assert scores["mba"] == pytest.approx(56 / 76)


def test_coco_non_trivial_scores_by_hand(runner, tmp_path):
    """One column too many (test_metrics' AP case): mask AP 0.9, boundary AP 0.3, IoU 100/110."""
    gt = coco_file(tmp_path / "gt.json", [square(5, 5, 10, (20, 20))], [3])
    wide = square(5, 5, 10, (20, 20))
    wide[5:15, 15] = 255
    pred = coco_file(tmp_path / "pred.json", [wide], [3])
    scores = run_eval(runner, tmp_path, gt, pred)
    assert scores["ap"] == pytest.approx(0.9) and scores["boundary_ap"] == pytest.approx(0.3)
    assert scores["iou"] == pytest.approx(100 / 110) and scores["boundary_iou"] == pytest.approx(28 / 46)
    result = runner.invoke(app, ["eval", "--gt", str(gt), "--pred", str(pred), "--void", "0"])
    assert isinstance(result.exception, InputError) and "no void" in str(result.exception)


def eval_error(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, ["eval", *args])
    assert isinstance(result.exception, InputError), result.output
    assert "\n" not in str(result.exception)
    return str(result.exception)


def test_flat_binary_masks_without_format_ask_for_it(runner, tmp_path):
    flat = DATA / "davis2016" / "Annotations" / "blackswan"
    assert "--format masks or --format label-maps" in eval_error(runner, "--gt", str(flat), "--pred", str(flat))
    assert "--format" in eval_error(runner, "--gt", str(GRABCUT / "gt"), "--pred", str(GRABCUT / "gt"))
    nested_soft = tmp_path / "soft"
    write_png(nested_soft / "img" / "0.png", np.array([[0, 60, 200]], np.uint8))  # soft mask or label map?
    assert "--format" in eval_error(runner, "--gt", str(nested_soft), "--pred", str(nested_soft))


@pytest.mark.parametrize("layout", ["masks", "label-maps"])
def test_prediction_folder_without_the_ground_truths_files_is_an_error(runner, tmp_path, layout):
    gt = tmp_path / "gt"
    write_png(gt / "img" / "0.png", square(0, 0, 4))
    missing = tmp_path / "typo"
    assert f"{missing}: prediction folder not found" == eval_error(
        runner, "--gt", str(gt), "--pred", str(missing), "--format", layout
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds none of the 1 ground-truth files (e.g. img/0.png)" in eval_error(
        runner, "--gt", str(gt), "--pred", str(empty), "--format", layout
    )
    other = tmp_path / "other"
    write_png(other / "elsewhere" / "0.png", square(0, 0, 4))
    assert str(other) in eval_error(runner, "--gt", str(gt), "--pred", str(other), "--format", layout)


def test_coco_ground_truth_without_annotations_is_an_error(runner, tmp_path):
    """It printed AP 0.0000 and count 0 with exit 0: AP of nothing is undefined, not zero."""
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]}
                ],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    pred = tmp_path / "pred.json"
    pred.write_text("[]")
    result = runner.invoke(app, ["eval", "--gt", str(gt), "--pred", str(pred)])
    assert isinstance(result.exception, InputError) and str(gt) in str(result.exception)
    assert "no (non-crowd) annotations" in str(result.exception)
