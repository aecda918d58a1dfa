"""Metrics against values worked out by hand on small arrays, and COCO AP against pycocotools."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from samrefiner.evaluation.metrics import (
    ConfusionMatrix,
    MaskScores,
    boundary_accuracy,
    boundary_band,
    boundary_iou,
    coco_boundary_ap,
    coco_mask_ap,
    mask_iou,
    mba_radii,
)


def block(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """A bool mask with rows[0]..rows[1]-1 x cols[0]..cols[1]-1 set."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def test_mask_iou_by_hand():
    gt = block((6, 6), (0, 4), (0, 4))
    pred = block((6, 6), (0, 4), (2, 6))
    assert mask_iou(gt, pred) == pytest.approx(8 / 24)
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert mask_iou(np.zeros((3, 3)), np.ones((3, 3))) == 0.0


def test_pooled_iou_differs_from_mean_iou():
    scores = MaskScores()
    scores.add(block((6, 6), (0, 4), (0, 4)), block((6, 6), (0, 4), (2, 6)))  # I 8, U 24
    scores.add(block((2, 2), (0, 1), (0, 2)), block((2, 2), (0, 2), (0, 1)))  # I 1, U 3
    summary = scores.summary()
    assert summary["iou"] == pytest.approx(9 / 27)
    assert summary["mean_iou"] == pytest.approx((8 / 24 + 1 / 3) / 2)
    assert summary["count"] == 2
    scores.add(block((2, 2), (0, 2), (0, 2)), np.zeros((2, 2), bool))  # I 0, U 4
    assert scores.summary()["iou"] == pytest.approx(9 / 31)
    assert scores.summary()["mean_iou"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)


def test_boundary_band_width_and_image_border():
    # 10x10: diagonal 14.1, 0.02 * 14.1 rounds to 0, so d = 1: a 5x5 block keeps its 16-px ring.
    ring = boundary_band(block((10, 10), (2, 7), (2, 7)))
    assert ring.sum() == 25 - 9
    assert not ring[3:6, 3:6].any()
    # the whole image: zero padding makes the outermost ring boundary (100 - 64 px)
    assert boundary_band(np.ones((10, 10), bool)).sum() == 36
    # 100x100: 0.02 * 141.4 = 2.83 -> d = 3: a 20x20 block keeps 400 - 14 * 14 px
    assert boundary_band(block((100, 100), (10, 30), (10, 30))).sum() == 400 - 196


def test_boundary_iou_by_hand():
    gt = block((10, 10), (2, 7), (2, 7))
    pred = block((10, 10), (2, 7), (3, 8))
    # rings of 16 px each; they share rows 2 and 6 at columns 3..6 (8 px): 8 / (16 + 16 - 8)
    assert boundary_iou(gt, pred) == pytest.approx(8 / 24)
    assert mask_iou(gt, pred) == pytest.approx(20 / 30)


def test_mba_radii_follow_cascadepsp():
    assert mba_radii(480, 854) == [1, 1 + 0, 1 + 1, 1 + 2, 1 + 2]  # max_r 4.45: steps of 0.689
    assert mba_radii(1200, 1800) == [1, 2, 4, 6, 8]  # max_r 10: steps of 1.8
    assert mba_radii(7, 7) == [1] * 5  # max_r < 1: the radius stays 1


def test_mba_by_hand():
    # 7x7 image: every radius is 1, kernel the 3x3 cross. GT 3x3 block: dilation 21 px, erosion
    # 1 px (the centre), band 20 px of which 8 are object and 12 background.
    gt = block((7, 7), (2, 5), (2, 5))
    assert boundary_accuracy(gt, np.zeros_like(gt)) == pytest.approx(12 / 20)
    assert boundary_accuracy(gt, np.ones_like(gt)) == pytest.approx(8 / 20)
    assert boundary_accuracy(gt, gt) == 1.0
    grown = gt.copy()
    grown[1, 3] = True  # one band pixel above the block is wrong now
    assert boundary_accuracy(gt, grown) == pytest.approx(19 / 20)
    assert boundary_accuracy(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # no boundary: exact match
    assert boundary_accuracy(np.zeros_like(gt), grown) == 0.0


def test_miou_by_hand():
    matrix = ConfusionMatrix()
    matrix.add(np.array([[0, 0, 1, 1], [0, 0, 1, 255]]), np.array([[0, 1, 1, 1], [0, 0, 2, 2]]))
    # class 0: TP 3, FN 1 -> 3/4; class 1: TP 2, FP 1, FN 1 -> 2/4; class 2: FP 1 -> 0; void ignored
    assert matrix.class_ious() == pytest.approx({0: 0.75, 1: 0.5, 2: 0.0})
    assert matrix.miou() == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    # a second map is pooled into the same matrix; a predicted 255 is a miss for no class
    matrix.add(np.array([[3, 3]]), np.array([[3, 255]]))
    assert matrix.class_ious()[3] == pytest.approx(0.5)
    assert 255 not in matrix.class_ious()
    assert matrix.count == 2


def test_perfect_prediction_scores_one_everywhere():
    rng = np.random.default_rng(0)
    gt = block((40, 50), (5, 30), (10, 40)) | block((40, 50), (20, 38), (2, 12))
    scores = MaskScores()
    scores.add(gt, gt.copy())
    assert scores.summary() == {"iou": 1.0, "mean_iou": 1.0, "boundary_iou": 1.0, "mba": 1.0, "count": 1}
    labels = rng.integers(0, 5, size=(8, 9)).astype(np.uint8)
    labels[0, 0] = 255
    matrix = ConfusionMatrix()
    matrix.add(labels, labels.copy())
    assert matrix.miou() == 1.0
    dataset, results = coco_case([[gt]], [[(gt, 1.0)]])
    assert coco_mask_ap(dataset, results) == pytest.approx(1.0)
    assert coco_boundary_ap(dataset, results) == pytest.approx(1.0)


def coco_case(gt_masks, detections, crowd=()):
    """A COCO dataset (one image per entry of gt_masks, category 1) and results from masks."""
    images, annotations, results = [], [], []
    for image_id, (objects, detected) in enumerate(zip(gt_masks, detections), start=1):
        height, width = objects[0].shape
        images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.png"})
        for mask in objects:
            rle = rle_of(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "bbox": list(mask_utils.toBbox(rle)),
                    "iscrowd": int(len(annotations) + 1 in crowd),
                }
            )
        results += [
            {"image_id": image_id, "category_id": 1, "segmentation": rle_of(m), "score": s} for m, s in detected
        ]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}, results


def rle_of(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def test_mask_and_boundary_ap_by_hand():
    # 20x20 image, d = 1. GT 10x10 block; detection = GT plus one column on the right.
    gt = block((20, 20), (5, 15), (5, 15))
    pred = block((20, 20), (5, 15), (5, 16))
    # mask IoU 100/110 = 0.909: matched at thresholds 0.50..0.90 (9 of 10) -> AP 0.9
    dataset, results = coco_case([[gt]], [[(pred, 0.9)]])
    assert coco_mask_ap(dataset, results) == pytest.approx(0.9)
    # rings: GT 36 px, prediction 38 px, shared 28 (top, bottom, left): 28/46 = 0.609 is below the
    # mask IoU, so the pair counts as 0.609: matched at 0.50, 0.55, 0.60 -> boundary AP 0.3
    assert boundary_iou(gt, pred) == pytest.approx(28 / 46)
    assert coco_boundary_ap(dataset, results) == pytest.approx(0.3)


def thin_objects(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Random 2-px-thick bars in a 60x60 image: their boundary band (d = 2) is the whole bar."""
    masks = []
    for _ in range(count):
        mask = np.zeros((60, 60), bool)
        top, left = rng.integers(0, 50, size=2)
        if rng.integers(2):
            mask[top : top + 2, left : left + int(rng.integers(4, 10))] = True
        else:
            mask[top : top + int(rng.integers(4, 10)), left : left + 2] = True
        masks.append(mask)
    return masks


def pycocotools_segm_ap(dataset: dict, results: list[dict]) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_ap_matches_pycocotools_and_boundary_ap_equals_it_on_thin_objects():
    """On bars 2 px thick the band is the whole mask, so boundary AP must equal pycocotools' AP;
    several images, shifted and spurious detections with scores, and a crowd region."""
    rng = np.random.default_rng(7)
    gt_masks, detections = [], []
    for _ in range(3):
        objects = thin_objects(rng, 4)
        detected = [
            (np.roll(mask, int(rng.integers(0, 2)), axis=int(rng.integers(2))), float(rng.random()))
            for mask in objects[:3]
        ]
        detected += [(m, float(rng.random())) for m in thin_objects(rng, 2)]
        gt_masks.append(objects)
        detections.append(detected)
    dataset, results = coco_case(gt_masks, detections, crowd={2})
    assert all(boundary_band(m).sum() == m.sum() for objects in gt_masks for m in objects)
    expected = pycocotools_segm_ap(dataset, [dict(r) for r in results])
    assert 0.1 < expected < 0.9
    assert coco_mask_ap(dataset, results) == pytest.approx(expected)
    assert coco_boundary_ap(dataset, results) == pytest.approx(expected)


def test_boundary_ap_is_below_mask_ap_on_thick_shifted_objects():
    rng = np.random.default_rng(1)
    gt_masks, detections = [], []
    for _ in range(2):
        gt = block((80, 80), (10, 50), (10, 50))
        pred = np.roll(gt, int(rng.integers(1, 4)), axis=1)
        gt_masks.append([gt])
        detections.append([(pred, 1.0)])
    dataset, results = coco_case(gt_masks, detections)
    assert coco_boundary_ap(dataset, results) < coco_mask_ap(dataset, results)


def test_shifted_block_by_hand():
    """A 10x10 block in a 20x20 image (d = 1, every mBA radius 1) against it shifted one column right."""
    gt = block((20, 20), (5, 15), (5, 15))
    pred = block((20, 20), (5, 15), (6, 16))
    scores = MaskScores()
    scores.add(gt, pred)
    # rings of 36 px share the top and bottom rows at columns 6..14: 18 / (36 + 36 - 18)
    # mBA band (3x3 cross): the 36-px inner ring plus 40 px outside; wrong: column 5 and column 15
    assert scores.summary() == pytest.approx(
        {"iou": 90 / 110, "mean_iou": 90 / 110, "boundary_iou": 18 / 54, "mba": 56 / 76, "count": 1}
    )


def test_void_pixels_leave_every_score_by_hand():
    """GrabCut-like: a 3x3 certain object inside a 1-px void ring (5x5 block minus the object)."""
    certain = block((7, 7), (2, 5), (2, 5))
    void = block((7, 7), (1, 6), (1, 6)) & ~certain  # 16 px
    covering = block((7, 7), (1, 6), (1, 6))  # the object and all of the void
    assert mask_iou(certain, covering) == pytest.approx(9 / 25)
    assert mask_iou(certain, covering, void) == 1.0
    assert mask_iou(certain, certain, void) == 1.0
    # mBA band (3x3 cross): the 8-px inner ring and 12 px outside it, all void: 8 / 8 right
    assert boundary_accuracy(certain, covering) == pytest.approx(8 / 20)
    assert boundary_accuracy(certain, covering, void) == 1.0
    missing_corner = certain & ~block((7, 7), (2, 3), (2, 3))
    assert boundary_accuracy(certain, missing_corner, void) == pytest.approx(7 / 8)
    # boundary bands: the prediction's band is all void, the object's 8-px ring is not; without
    # its corner the prediction erodes to nothing, so its band is all 8 px: 7 shared of 9
    assert boundary_iou(certain, covering, void=void) == 0.0
    assert boundary_iou(certain, missing_corner, void=void) == pytest.approx(7 / 9)
    # a prediction leaking outside the void still counts there: I 9, U 9 + 2
    leaking = covering.copy()
    leaking[0, 0:2] = True
    assert mask_iou(certain, leaking, void) == pytest.approx(9 / 11)
    scores = MaskScores()
    scores.add(certain, covering, void)
    scores.add(certain, leaking, void)
    assert scores.summary()["iou"] == pytest.approx(18 / 20)


def test_confusion_matrix_void_label_is_a_setting():
    gt, pred = np.array([[0, 0, 1, 255]]), np.array([[0, 1, 1, 1]])
    without = ConfusionMatrix(void=None)  # 255 is a class: TP 0, FN 1
    without.add(gt, pred)
    # class 0: TP 1, FN 1; class 1: TP 1, FP 2
    assert without.class_ious() == pytest.approx({0: 1 / 2, 1: 1 / 3, 255: 0.0})
    zero_void = ConfusionMatrix(void=0)
    zero_void.add(gt, pred)
    assert zero_void.class_ious() == pytest.approx({1: 1 / 2, 255: 0.0})
