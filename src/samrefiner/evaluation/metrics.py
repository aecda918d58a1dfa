"""Segmentation quality metrics, computed the way the field reports them (SPEC.md section 7).

Per object: `mask_iou`, `boundary_iou` (Cheng et al. 2021) and `boundary_accuracy` (mBA, CascadePSP).
Over a dataset: `MaskScores` pools intersections and unions (IoU = sum(I) / sum(U)) and averages the
per-object values; `ConfusionMatrix` gives the semantic mIoU; `coco_mask_ap` / `coco_boundary_ap`
run pycocotools' COCOeval (the boundary variant takes min(mask IoU, boundary IoU) per pair).

Void: every per-object metric takes an optional `void` mask (pixels of unknown truth, e.g.
GrabCut's 128 "uncertain" band). Void pixels are left out of the intersection, the union, both
boundary bands and the mBA bands, as in RITM's GrabCut protocol (ignore label) and CascadePSP's
evaluation; `ConfusionMatrix` ignores a void label (255 by default) the same way.

Conventions for degenerate cases: an empty prediction of an empty ground truth scores 1 (IoU,
boundary IoU); a ground truth without any boundary outside void (empty or filling the image)
gives mBA 1 when the prediction equals it outside void and 0 otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

BOUNDARY_DILATION_RATIO = 0.02
MBA_STEPS = 5
VOID_LABEL = 255


def intersection_union(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> tuple[int, int]:
    """Pixel counts |gt & pred| and |gt | pred| of two boolean masks of the same shape, outside `void`."""
    gt, pred = _as_bool_pair(gt, pred)
    intersection, union = gt & pred, gt | pred
    if void is not None:
        kept = ~_void_of(void, gt.shape)
        intersection, union = intersection & kept, union & kept
    return int(np.count_nonzero(intersection)), int(np.count_nonzero(union))


def mask_iou(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """|gt & pred| / |gt | pred| outside `void`; 1 when both are empty there."""
    intersection, union = intersection_union(gt, pred, void)
    return _ratio(intersection, union)


def boundary_band(mask: np.ndarray, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> np.ndarray:
    """The mask minus its erosion (3x3 kernel, d times, d = max(1, round(ratio * diagonal))).

    The mask is zero-padded by one pixel first, so pixels on the image border count as boundary.
    """
    height, width = mask.shape
    iterations = max(1, int(round(dilation_ratio * np.hypot(height, width))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=iterations)
    return mask.astype(bool) & ~eroded[1:-1, 1:-1].astype(bool)


def boundary_iou(
    gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = BOUNDARY_DILATION_RATIO, void: np.ndarray | None = None
) -> float:
    """IoU of the two masks' boundary bands (`boundary_band`) outside `void`; 1 when both are empty there."""
    gt, pred = _as_bool_pair(gt, pred)
    return mask_iou(boundary_band(gt, dilation_ratio), boundary_band(pred, dilation_ratio), void)


def mba_radii(height: int, width: int) -> list[int]:
    """CascadePSP's five band radii: 1 + int((max_r - 1) / 5 * i), max_r = (W + H) / 300."""
    max_radius = (width + height) / 300
    return [1 + int((max_radius - 1) / MBA_STEPS * step) for step in range(MBA_STEPS)]


def boundary_accuracy(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """mBA of one object: pixel accuracy of `pred` inside GT's morphological-gradient bands.

    One band per radius of `mba_radii` (elliptical kernel of side 2r + 1), less the `void` pixels;
    the result is the mean accuracy over the radii.
    """
    gt, pred = _as_bool_pair(gt, pred)
    kept = np.ones(gt.shape, bool) if void is None else ~_void_of(void, gt.shape)
    gt_u8 = gt.astype(np.uint8)
    accuracies = []
    for radius in mba_radii(*gt.shape):
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        band = (cv2.morphologyEx(gt_u8, cv2.MORPH_GRADIENT, kernel) > 0) & kept
        if not band.any():
            accuracies.append(float(np.array_equal(gt[kept], pred[kept])))
            continue
        accuracies.append(float(np.count_nonzero(gt[band] == pred[band]) / np.count_nonzero(band)))
    return float(np.mean(accuracies))


@dataclass
class MaskScores:
    """Running totals over a dataset of (ground truth, prediction) binary mask pairs."""

    intersection: int = 0
    union: int = 0
    ious: list[float] = field(default_factory=list)
    boundary_ious: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)

    def add(self, gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> None:
        """Score one object (outside `void`) and add it to the totals."""
        gt, pred = _as_bool_pair(gt, pred)
        intersection, union = intersection_union(gt, pred, void)
        self.intersection += intersection
        self.union += union
        self.ious.append(_ratio(intersection, union))
        self.boundary_ious.append(boundary_iou(gt, pred, void=void))
        self.accuracies.append(boundary_accuracy(gt, pred, void))

    @property
    def count(self) -> int:
        return len(self.ious)

    def summary(self) -> dict[str, float | int]:
        """`iou` (pooled sum(I)/sum(U)), `mean_iou`, `boundary_iou`, `mba` (object means), `count`."""
        return {
            "iou": _ratio(self.intersection, self.union),
            "mean_iou": _mean(self.ious),
            "boundary_iou": _mean(self.boundary_ious),
            "mba": _mean(self.accuracies),
            "count": self.count,
        }


class ConfusionMatrix:
    """One confusion matrix over a dataset of label maps; ground-truth `void` (255; None: no void
    label) is ignored.

    A predicted void label on a labelled pixel is a miss for the true class and counts for no class.
    """

    def __init__(self, void: int | None = VOID_LABEL) -> None:
        self.matrix = np.zeros((0, 0), dtype=np.int64)
        self.count = 0
        self.void = void

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one (ground truth, prediction) pair of integer label maps of the same shape."""
        if gt.shape != pred.shape:
            raise ValueError(f"label maps differ in shape: {gt.shape} vs {pred.shape}")
        valid = np.ones(gt.shape, bool) if self.void is None else gt != self.void
        gt_labels = gt[valid].astype(np.int64)
        pred_labels = pred[valid].astype(np.int64)
        size = max(self.matrix.shape[0], VOID_LABEL + 1, int(gt.max(initial=0)) + 1, int(pred.max(initial=0)) + 1)
        counts = np.bincount(gt_labels * size + pred_labels, minlength=size * size).reshape(size, size)
        counts[: self.matrix.shape[0], : self.matrix.shape[1]] += self.matrix
        self.matrix = counts
        self.count += 1

    def class_ious(self) -> dict[int, float]:
        """TP / (TP + FP + FN) for every class (not void) that occurs in the GT or the prediction."""
        true_positive = np.diag(self.matrix)
        false_positive = self.matrix.sum(axis=0) - true_positive
        false_negative = self.matrix.sum(axis=1) - true_positive
        union = true_positive + false_positive + false_negative
        return {
            label: float(true_positive[label] / union[label])
            for label in range(self.matrix.shape[0])
            if label != self.void and union[label] > 0
        }

    def miou(self) -> float:
        """Mean of `class_ious` (classes absent from both GT and prediction are left out)."""
        return _mean(list(self.class_ious().values()))

    def summary(self) -> dict[str, float | int]:
        """`miou` and `count` (label maps added)."""
        return {"miou": self.miou(), "count": self.count}


def coco_mask_ap(ground_truth: dict, results: list[dict]) -> float:
    """COCO mask AP@[.5:.95] (pycocotools, iouType "segm") of `results` against a COCO dataset dict.

    `results` are COCO results (`image_id`, `category_id`, `segmentation`, `score`); neither
    argument is modified.
    """
    return _run_cocoeval(COCOeval, ground_truth, results)


def coco_boundary_ap(ground_truth: dict, results: list[dict]) -> float:
    """Boundary AP: COCO matching with per-pair IoU = min(mask IoU, boundary IoU) (crowd: mask IoU)."""
    return _run_cocoeval(BoundaryCOCOeval, ground_truth, results)


class BoundaryCOCOeval(COCOeval):
    """COCOeval whose per-pair IoU is min(mask IoU, boundary IoU) for non-crowd ground truth."""

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (pycocotools' names)
        mask_ious = super().computeIoU(imgId, catId)
        if len(mask_ious) == 0:
            return mask_ious
        gt, dt = self._ordered_annotations(imgId, catId)
        boundary_ious = mask_utils.iou([_boundary_rle(d) for d in dt], [_boundary_rle(g) for g in gt], [0] * len(gt))
        crowd = np.array([bool(g["iscrowd"]) for g in gt])[None, :]
        return np.where(crowd, mask_ious, np.minimum(mask_ious, boundary_ious))

    def _ordered_annotations(self, image_id: int, category_id: int) -> tuple[list[dict], list[dict]]:
        """GT and detections in the order `COCOeval.computeIoU` uses (score-sorted, capped)."""
        params = self.params
        categories = [category_id] if params.useCats else params.catIds
        gt = [ann for category in categories for ann in self._gts[image_id, category]]
        dt = [ann for category in categories for ann in self._dts[image_id, category]]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        return gt, [dt[i] for i in order][: params.maxDets[-1]]


def _boundary_rle(annotation: dict) -> dict:
    """The RLE of the boundary band of an annotation whose segmentation COCOeval made an RLE."""
    band = boundary_band(mask_utils.decode(annotation["segmentation"]))
    return mask_utils.encode(np.asfortranarray(band.astype(np.uint8)))


def _run_cocoeval(evaluator_class: type[COCOeval], ground_truth: dict, results: list[dict]) -> float:
    """AP@[.5:.95], all areas, 100 detections (stats[0]); 0 without results, NaN without GT."""
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_ground_truth(ground_truth)
        evaluator = evaluator_class(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap = float(evaluator.stats[0])
    return ap if ap >= 0 else float("nan")


def _coco_ground_truth(ground_truth: dict) -> COCO:
    """An indexed copy, with what COCOeval needs filled in when absent: categories, iscrowd, area."""
    coco = COCO()
    coco.dataset = copy.deepcopy(ground_truth)
    annotations = coco.dataset["annotations"]
    if not coco.dataset.get("categories"):
        categories = sorted({annotation["category_id"] for annotation in annotations})
        coco.dataset["categories"] = [{"id": category} for category in categories]
    coco.createIndex()
    for annotation in annotations:
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            annotation["area"] = float(mask_utils.area(coco.annToRLE(annotation)))
    return coco


def _void_of(void: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if void.shape != shape:
        raise ValueError(f"void mask is {void.shape}, the masks {shape}")
    return void.astype(bool, copy=False)


def _as_bool_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if gt.shape != pred.shape:
        raise ValueError(f"masks differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    return gt.astype(bool, copy=False), pred.astype(bool, copy=False)


def _ratio(numerator: int, denominator: int) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
