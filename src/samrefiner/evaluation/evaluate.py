"""Score predicted masks against ground truth (SPEC.md section 7), the library of `samrefiner eval`.

Four layouts, detected from the ground truth by `samrefiner.io.formats.detect_format` unless the caller
names one:
- `masks`: a folder of per-image folders of per-object mask files (any depth; a flat folder of
  binary masks works too when named as `masks`). Files are listed as `refine` lists them
  (`samrefiner.io.listing`: any case of suffix, hidden files skipped) and a prediction is paired
  with the ground truth of its key (relative path without suffix: `0.PNG` with `0.png`).
  Scores: `iou` (pooled), `mean_iou`, `boundary_iou`, `mba`.
- `label-maps`: a folder of label-map PNGs, paired the same way. Score: `miou`.
- `coco`: COCO instance JSON files. Scores: `ap`, `boundary_ap`; and, for predictions that carry
  the ground truth's annotation ids (e.g. `samrefiner refine --coco` output), the per-object
  `iou`, `mean_iou`, `boundary_iou`, `mba` matched by id.
- `yolo`: YOLO segmentation dataset folders (data.yaml; `samrefiner refine --yolo` output as
  the prediction, its images may stay in the ground truth's folder); objects are paired by label
  file and line order. Scores: `iou`, `mean_iou`, `boundary_iou`, `mba`. A label file with another
  number of lines or other class ids than the ground truth's is unusable, and so is one that
  `refine` would refuse (the prediction is read as a YOLO dataset, with its own data.yaml).

Every format is read by the readers `samrefiner refine` reads datasets with
(`samrefiner.io.formats`: the YOLO dataset, the listing and reading of mask and map files;
`samrefiner.io.coco` for whole COCO files), so a format's rules (hidden files skipped, suffixes,
EXIF orientation, mask values, identity, YOLO's conventions) are the same in both.

Detection: a .json file is COCO; a folder whose PNGs all lie in subfolders and each hold one
object value is `masks`; a flat folder where some PNG holds several values is `label-maps`;
any other folder (e.g. flat binary masks, which could be one-class label maps) is refused
(`samrefiner.io.formats.FormatUnclear`: the caller must name the layout).

Void (`samrefiner.evaluation.groundtruth`): ground-truth pixels of the void value are left out of
every score; by default 128 in masks whose values are exactly {0, 128, 255} (GrabCut), 255 in
label maps.

A missing prediction is scored as an empty mask (all background for label maps); an unreadable
or wrongly sized one as well, and both are listed in the report (`EvalReport.unusable`). A
prediction folder that holds none of the ground truth's files, and unusable ground truth, raise
InputError.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samrefiner.errors import InputError
from samrefiner.evaluation.groundtruth import AUTO, Void, VoidError, label_map_void, read_truth
from samrefiner.io.formats import list_object_files, read_object_file
from samrefiner.io.json_files import json_or_none, write_json_file
from samrefiner.io.listing import ambiguous

if TYPE_CHECKING:
    from samrefiner.evaluation.metrics import ConfusionMatrix, MaskScores
    from samrefiner.io.datasets import Dataset, Sample, SampleRef


class Format(str, Enum):
    masks = "masks"
    label_maps = "label-maps"
    coco = "coco"
    yolo = "yolo"


@dataclass
class EvalReport:
    """Scores on a 0-1 scale plus `count`; predictions that were missing or unusable."""

    format: Format
    scores: dict[str, float | int]
    missing: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)


def evaluate(gt: Path, pred: Path, layout: Format, void: Void = AUTO) -> EvalReport:
    """Score `pred` against `gt`, both in `layout`, leaving ground-truth `void` pixels out (YOLO polygons have none)."""
    if layout is Format.yolo:
        return evaluate_yolo(gt, pred)
    evaluators = {Format.masks: evaluate_masks, Format.label_maps: evaluate_label_maps, Format.coco: evaluate_coco}
    return evaluators[layout](gt, pred, void)


def evaluate_masks(gt: Path, pred: Path, void: Void = AUTO) -> EvalReport:
    """Binary masks paired by relative path: pooled and mean IoU, boundary IoU, mBA (outside void)."""
    from samrefiner.evaluation.metrics import MaskScores

    scores = MaskScores()

    def add(truth_path: Path, prediction_path: Path | None, report: EvalReport) -> None:
        truth = read_truth(truth_path, void)
        prediction = _prediction(report, prediction_path, Format.masks, truth.mask.shape, np.zeros_like(truth.mask))
        scores.add(truth.mask, prediction, truth.void)

    return _evaluate_pngs(gt, pred, Format.masks, add, scores)


def evaluate_label_maps(gt: Path, pred: Path, void: Void = AUTO) -> EvalReport:
    """Label maps paired by relative path: mIoU from one confusion matrix (GT void, 255 by default, ignored)."""
    from samrefiner.evaluation.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(label_map_void(void))

    def add(truth_path: Path, prediction_path: Path | None, report: EvalReport) -> None:
        truth = read_object_file(Format.label_maps.value, truth_path)
        matrix.add(truth, _prediction(report, prediction_path, Format.label_maps, truth.shape, np.zeros_like(truth)))

    return _evaluate_pngs(gt, pred, Format.label_maps, add, matrix)


def _evaluate_pngs(
    gt: Path,
    pred: Path,
    layout: Format,
    add: Callable[[Path, Path | None, EvalReport], None],
    totals: MaskScores | ConfusionMatrix,
) -> EvalReport:
    """`add` every ground-truth file under `gt` with the prediction of its key under `pred`
    (`samrefiner.io.listing`; a missing, ambiguous or unusable prediction counts as all zeros),
    then summarize `totals`; InputError when `pred` holds none of them."""
    files = _listed(gt, layout)
    predictions = _check_prediction_folder(pred, files, layout)
    report = EvalReport(layout, {})
    for key, (truth_path,) in files.items():
        found = predictions.get(key, [pred / truth_path.relative_to(gt)])
        if len(found) > 1:
            report.unusable.append(f"{pred}: {ambiguous(key, found, 'prediction')}")
        add(truth_path, None if len(found) > 1 else found[0], report)
    report.scores = totals.summary()
    return report


def _check_prediction_folder(pred: Path, files: dict[str, list[Path]], layout: Format) -> dict[str, list[Path]]:
    """The predictions by key; a mistyped or empty prediction folder is an error, not a dataset of empty predictions."""
    if not pred.exists():
        raise InputError(f"{pred}: prediction folder not found")
    if not pred.is_dir():
        raise InputError(f"{pred}: predictions must be a folder like the ground truth")
    predictions = list_object_files(layout.value, pred)
    if not predictions.keys() & files.keys():
        key, (first,) = next(iter(files.items()))
        raise InputError(f"{pred}: holds none of the {len(files)} ground-truth files (e.g. {key}{first.suffix})")
    return predictions


def evaluate_coco(gt: Path, pred: Path, void: Void = AUTO) -> EvalReport:
    """COCO mask AP and boundary AP; per-object scores for predictions matched by annotation id."""
    from samrefiner.evaluation.metrics import coco_boundary_ap, coco_mask_ap
    from samrefiner.io.coco import read_ground_truth, read_predictions

    if void != AUTO:
        raise VoidError("none" if void is None else void, ": COCO ground truth has no void value")
    truth, sizes = read_ground_truth(gt)
    objects = [annotation for annotation in truth["annotations"] if not annotation.get("iscrowd")]
    if not objects:
        raise InputError(f"{gt}: no (non-crowd) annotations to score: AP is undefined")
    report = EvalReport(Format.coco, {})
    results = _coco_results(read_predictions(pred), pred, sizes, report)
    report.scores = {"ap": coco_mask_ap(truth, results), "boundary_ap": coco_boundary_ap(truth, results)}
    by_id = {result["id"]: result for result in results if "id" in result}
    if any(annotation["id"] in by_id for annotation in objects):
        report.scores.update(_scores_by_id(objects, by_id, sizes, gt, pred, report).summary())
    report.scores["count"] = len(objects)
    return report


def evaluate_yolo(gt: Path, pred: Path) -> EvalReport:
    """YOLO datasets: each ground-truth object against the prediction's object of the same file and
    line number; both read by `samrefiner.io.yolo.YoloDataset`, the prediction with the ground
    truth's images (a refine output holds none unless it copied them)."""
    from samrefiner.evaluation.metrics import MaskScores
    from samrefiner.io.formats import open_dataset

    truth = open_dataset("yolo", gt, None, pred)  # read only: nothing is written
    predicted = open_dataset("yolo", pred, truth.images, pred)
    predicted_refs = {ref.key: ref for ref in predicted.refs()}
    report, scores = EvalReport(Format.yolo, {}), MaskScores()
    for ref in truth.refs():
        sample = truth.load(ref)
        label = pred / truth.input_files(ref)[1].relative_to(gt)  # the prediction's label file
        masks = _yolo_prediction(report, predicted, predicted_refs.get(ref.key), label, sample)
        for index, mask in enumerate(sample.masks):
            scores.add(mask, masks[index] if masks is not None else np.zeros_like(mask))
    report.scores = scores.summary()
    return report


def _yolo_prediction(
    report: EvalReport, predicted: Dataset, ref: SampleRef | None, label: Path, truth: Sample
) -> np.ndarray | None:
    """The predicted masks of `truth`'s objects (the prediction's image `ref`, label file `label`),
    or None (recorded) when missing or unusable."""
    if ref is None:
        report.missing.append(str(label))
        return None
    try:
        sample = predicted.load(ref)
    except InputError as error:
        report.unusable.append(str(error))
        return None
    numbers = [(meta["id"], meta["category_id"]) for meta in sample.objects]
    if numbers != [(meta["id"], meta["category_id"]) for meta in truth.objects]:
        classes = [meta["category_id"] for meta in sample.objects]
        report.unusable.append(f"{label}: {len(numbers)} lines with classes {classes} differ from the ground truth's")
        return None
    return sample.masks


def _coco_results(
    predictions: list[Any], pred: Path, sizes: dict[Any, tuple[int, int]], report: EvalReport
) -> list[dict]:
    """Predictions (a COCO file's annotations or a results list) as COCO results with compressed
    RLE segmentations and a score (1 when absent); unusable ones are recorded and left out."""
    from samrefiner.io.coco import decode_segmentation
    from samrefiner.io.rle import encode_mask

    results = []
    for index, prediction in enumerate(predictions):
        has_id = isinstance(prediction, dict) and "id" in prediction
        name = f"{pred}: annotation " + (f"id {prediction['id']}" if has_id else f"#{index}")
        try:
            if prediction["image_id"] not in sizes:
                raise InputError(f"image id {prediction['image_id']} is not in the ground truth")
            mask = decode_segmentation(prediction["segmentation"], *sizes[prediction["image_id"]])
            result = {
                "image_id": prediction["image_id"],
                "category_id": prediction["category_id"],
                "segmentation": encode_mask(mask),
                "score": float(prediction.get("score", 1.0)),
            }
        except KeyError as error:
            report.unusable.append(f"{name}: has no {error.args[0]!r}")
            continue
        except (InputError, TypeError, ValueError) as error:
            report.unusable.append(f"{name}: {error}")
            continue
        if "id" in prediction:
            result["id"] = prediction["id"]
        results.append(result)
    return results


def _scores_by_id(
    objects: list[dict],
    by_id: dict[Any, dict],
    sizes: dict[Any, tuple[int, int]],
    gt: Path,
    pred: Path,
    report: EvalReport,
) -> MaskScores:
    """Per-object scores of each ground-truth annotation against the prediction with its id."""
    from samrefiner.evaluation.metrics import MaskScores
    from samrefiner.io.coco import decode_segmentation

    scores = MaskScores()
    for annotation in objects:
        try:
            truth = decode_segmentation(annotation["segmentation"], *sizes[annotation["image_id"]])
        except InputError as error:
            raise InputError(f"{gt}: annotation id {annotation['id']}: {error}") from None
        matched = by_id.get(annotation["id"])
        if matched is None:
            report.missing.append(f"{pred}: annotation id {annotation['id']}")
            scores.add(truth, np.zeros_like(truth))
            continue
        scores.add(truth, decode_segmentation(matched["segmentation"], *truth.shape))
    return scores


def write_json(path: Path, report: EvalReport) -> None:
    """The scores (NaN as null) plus the lists of missing and unusable predictions."""
    document = {**json_ready(report.scores), "missing": report.missing, "unusable": report.unusable}
    write_json_file(path, document)


def is_eval_json(path: Path) -> bool:
    """Whether the file is a scores file `write_json` wrote (its "missing" and "unusable" lists)."""
    document = json_or_none(path)
    return isinstance(document, dict) and all(isinstance(document.get(key), list) for key in ("missing", "unusable"))


def json_ready(scores: dict[str, Any]) -> dict[str, Any]:
    """`scores` with NaN (a mean over nothing) as None, which JSON writes as null."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in scores.items()}


def _listed(root: Path, layout: Format) -> dict[str, list[Path]]:
    """Ground-truth files by key (as `refine` lists them); InputError when there are none or two
    files share a key."""
    files = list_object_files(layout.value, root)
    if not files:
        raise InputError(f"{root}: no {'mask' if layout is Format.masks else '.png'} files to evaluate")
    for key, paths in files.items():
        if len(paths) > 1:
            raise InputError(f"{root}: {ambiguous(key, paths, 'ground-truth file')}")
    return files


def _prediction(
    report: EvalReport, path: Path | None, layout: Format, shape: tuple[int, ...], empty: np.ndarray
) -> np.ndarray:
    """The prediction at `path` read as a `layout` file, or `empty` (recorded in the report) when
    missing or unusable (None: already recorded)."""
    if path is None:
        return empty
    if not path.exists():
        report.missing.append(str(path))
        return empty
    try:
        array = read_object_file(layout.value, path)
    except InputError as error:
        report.unusable.append(str(error))
        return empty
    if array.shape != shape:
        size, expected = f"{array.shape[1]}x{array.shape[0]}", f"{shape[1]}x{shape[0]}"
        report.unusable.append(f"{path}: size {size} differs from the ground truth's {expected}")
        return empty
    return array
