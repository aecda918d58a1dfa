"""Refine a label field of a FiftyOne dataset into a new field (needs `samrefiner[fiftyone]`).

    import fiftyone as fo
    from samrefiner.integrations.fiftyone import refine_field

    refine_field(dataset, refiner, "ground_truth", "refined")   # then compare both in the App

Two label types are refined:
- `Detections` with instance masks. FiftyOne keeps each mask cropped to its box
  (`bounding_box` = [x, y, w, h] relative to the image); the crop is pasted back at the box's
  pixels (box corners rounded, the crop resized with nearest neighbour when its size differs,
  parts outside the image dropped). A detection without a mask is refined from its filled box.
  Each refined detection is a copy of the input one (label, confidence, attributes, ...) with
  `bounding_box` the refined mask's tight box and `mask` the refined mask cropped to it; a
  detection whose refined mask is empty keeps its input box and mask (counted).
- `Segmentation` label maps (`mask` or `mask_path`; 2-D integer maps): refined with
  `Refiner.refine_label_map` into a `Segmentation` whose `mask` is the refined map.

Every refined label is a new label (its own id, as FiftyOne gives copies) whose `source_id`
attribute is the id of the label it was refined from, so refined and coarse labels pair up:
`refined.source_id == coarse.id`.

Resumable by sample: a sample that already has a value in the new field is skipped (unless
`overwrite`), and each sample is saved as soon as it is refined, so an interrupted call is
continued by calling it again. A progress bar counts samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from samrefiner.errors import InputError
from samrefiner.io.images import read_image
from samrefiner.io.labelmaps import read_label_map
from samrefiner.prompts import tight_boxes

if TYPE_CHECKING:
    from samrefiner.refine import Refiner


@dataclass
class FieldSummary:
    """What `refine_field` did."""

    refined: int = 0  # samples refined in this call
    skipped: int = 0  # samples that already had the new field (an earlier call)
    unlabeled: int = 0  # samples without a label in the input field
    kept: int = 0  # detections whose refined mask was empty (kept as they were)


def refine_field(
    dataset: Any, refiner: Refiner, field: str, new_field: str, *, overwrite: bool = False, progress: bool = True
) -> FieldSummary:
    """Refine `dataset`'s `field` (Detections with masks, or Segmentation) into `new_field`."""
    from tqdm import tqdm

    if new_field == field:
        raise InputError(f"the refined labels need a field of their own: {field!r} is the input field")
    summary = FieldSummary()
    for sample in tqdm(dataset.iter_samples(), total=len(dataset), unit="sample", disable=not progress):
        if not overwrite and sample.has_field(new_field) and sample[new_field] is not None:
            summary.skipped += 1
            continue
        label = sample[field]
        if label is None:
            summary.unlabeled += 1
            continue
        refined, kept = refine_label(refiner, read_image(sample.filepath), label, f"{sample.filepath}: {field}")
        sample[new_field] = refined
        sample.save()
        summary.refined += 1
        summary.kept += kept
    return summary


def refine_label(refiner: Refiner, image: np.ndarray, label: Any, where: str) -> tuple[Any, int]:
    """A refined copy of a Detections or Segmentation label; also how many detections kept
    their input mask (their refined mask was empty)."""
    kind = type(label).__name__
    if kind == "Detections":
        detections, kept = refine_detection_list(refiner, image, label.detections)
        refined = label.copy()
        refined.detections = detections
        return refined, kept
    if kind == "Segmentation":
        refined = label.copy()
        refined.mask = refiner.refine_label_map(image, segmentation_map(label, where))
        refined.mask_path = None
        refined.source_id = label.id
        return refined, 0
    raise InputError(f"{where}: a {kind} label; only Detections with masks and Segmentation are refined")


def refine_detection_list(refiner: Refiner, image: np.ndarray, detections: list[Any]) -> tuple[list[Any], int]:
    """Copies of FiftyOne `Detection`s with refined `bounding_box` and `mask`, each with
    `source_id` the id of its input detection."""
    height, width = image.shape[:2]
    if not detections:
        return [], 0
    coarse = np.stack([full_mask(d.bounding_box, d.mask, height, width) for d in detections])
    result = refiner.refine(image, coarse)
    refined, kept = [], 0
    for detection, mask in zip(detections, result.masks):
        copy = detection.copy()
        copy.source_id = detection.id
        fields = cropped_mask(mask)
        if fields is None:
            kept += 1
        else:
            copy.bounding_box, copy.mask = fields
        refined.append(copy)
    return refined, kept


def full_mask(bounding_box: list[float], mask: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """The H x W mask of a detection: its box-cropped `mask` pasted at the box (the filled box
    when it has no mask)."""
    x, y, w, h = (float(value) for value in bounding_box)
    left, top = int(round(x * width)), int(round(y * height))
    box_width, box_height = max(int(round(w * width)), 1), max(int(round(h * height)), 1)
    crop = np.ones((box_height, box_width), bool) if mask is None else np.asarray(mask).astype(bool)
    if crop.ndim != 2:
        raise InputError(f"detection mask must be 2-D, got shape {crop.shape}")
    if crop.shape != (box_height, box_width):
        resized = Image.fromarray(crop.astype(np.uint8) * 255).resize((box_width, box_height), Image.NEAREST)
        crop = np.asarray(resized) > 127
    full = np.zeros((height, width), bool)
    rows = slice(max(top, 0), min(top + box_height, height))
    cols = slice(max(left, 0), min(left + box_width, width))
    full[rows, cols] = crop[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return full


def cropped_mask(mask: np.ndarray) -> tuple[list[float], np.ndarray] | None:
    """FiftyOne's `bounding_box` (relative [x, y, w, h], the tight box) and the mask cropped to
    it; None for an empty mask."""
    if not mask.any():
        return None
    height, width = mask.shape
    x1, y1, x2, y2 = (int(value) for value in tight_boxes(mask[None])[0])
    box = [x1 / width, y1 / height, (x2 - x1 + 1) / width, (y2 - y1 + 1) / height]
    return box, mask[y1 : y2 + 1, x1 : x2 + 1].copy()


def segmentation_map(label: Any, where: str) -> np.ndarray:
    """The 2-D label map of a Segmentation (`mask`, else the file at `mask_path`)."""
    if label.mask is not None:
        label_map = np.asarray(label.mask)
    elif label.mask_path:
        label_map = read_label_map(label.mask_path)[0]
    else:
        raise InputError(f"{where}: Segmentation has neither mask nor mask_path")
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        shape, dtype = label_map.shape, label_map.dtype
        raise InputError(f"{where}: Segmentation must be a 2-D integer label map, got shape {shape} dtype {dtype}")
    return label_map
