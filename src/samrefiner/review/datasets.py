"""The two datasets a review compares: a coarse input and its refined output, in one format.

Both are read with the readers of `samrefiner refine` (`samrefiner.io`). Objects are matched by
their id in that format (mask file name, COCO annotation id); a label map's refined output is
one map, so the refined mask of each coarse split-then-merge region is that map's pixels of
the region's class nearest to the region. Predicted IoUs come from the refine run's scores file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from samrefiner.errors import InputError
from samrefiner.io.datasets import Dataset, OutputLayout, Sample, SampleRef
from samrefiner.io.formats import FORMATS, detect_format, open_dataset
from samrefiner.io.labelmaps import LabelMaps, read_label_map
from samrefiner.io.maskvalues import LOSSY_SUFFIXES
from samrefiner.review.objects import ReviewImage, ReviewObject


@dataclass
class DatasetPair:
    """The coarse input (whose writer makes the final dataset) and the refine run's output."""

    kind: str
    coarse: Dataset
    refined: Dataset
    refined_path: Path

    @cached_property
    def refined_refs(self) -> dict[str, SampleRef]:
        """The images the refine run wrote, by key."""
        return {ref.key: ref for ref in self.refined.refs()}

    def load(self, ref: SampleRef) -> tuple[Sample, np.ndarray]:
        """One image's coarse sample and the refined mask of each of its objects (N x H x W);
        the image must be one of `refined_refs`."""
        coarse = self.coarse.load(ref)
        if self.kind == "label-maps":
            return coarse, self._refined_regions(coarse)
        if self.kind == "instance-maps":
            return coarse, self._refined_instances(coarse)
        refined = self.refined.load(self.refined_refs[ref.key])
        by_id = {_output_id(meta["id"]): mask for meta, mask in zip(refined.objects, refined.masks)}
        missing = [str(meta["id"]) for meta in coarse.objects if _output_id(meta["id"]) not in by_id]
        if missing:
            raise InputError(f"{ref.name}: object {missing[0]} has no refined mask in {self.refined_path}")
        masks = [by_id[_output_id(meta["id"])] for meta in coarse.objects]
        return coarse, np.stack(masks) if masks else np.zeros_like(coarse.masks)

    def _refined_regions(self, coarse: Sample) -> np.ndarray:
        classes = [meta["category_id"] for meta in coarse.objects]
        return split_like_regions(self._refined_map(coarse), coarse.masks, classes)

    def _refined_instances(self, coarse: Sample) -> np.ndarray:
        """Each instance id's pixels in the refined map (empty where the refined object lost every pixel)."""
        refined_map = self._refined_map(coarse)
        return np.stack([refined_map == meta["id"] for meta in coarse.objects]) if coarse.objects else coarse.masks

    def _refined_map(self, coarse: Sample) -> np.ndarray:
        """The refined dataset's map of the coarse sample's image (label or instance maps), checked
        to be the image's size."""
        refined = self.refined
        if not isinstance(refined, LabelMaps):
            raise TypeError(f"{self.refined_path}: read as {type(refined).__name__}, not as maps")
        refined_path = refined.map_file(self.refined_refs[coarse.ref.key])
        refined_map, _ = read_label_map(refined_path)
        if refined_map.shape != coarse.image.shape[:2]:
            raise InputError(f"{refined_path}: refined {self.kind[:-1]} is not the size of {coarse.image_path}")
        return refined_map


def split_like_regions(label_map: np.ndarray, regions: np.ndarray, classes: list[int]) -> np.ndarray:
    """Each region's share of `label_map`: the pixels of its class nearer to it than to the
    other regions of that class (all of them when the class has one region)."""
    shares = np.zeros_like(regions, dtype=bool)
    for class_id in sorted(set(classes)):
        members = [index for index, region_class in enumerate(classes) if region_class == class_id]
        of_class = label_map == class_id
        if len(members) == 1:
            shares[members[0]] = of_class
            continue
        numbers = np.zeros(label_map.shape, np.int32)
        for number, index in enumerate(members, start=1):
            numbers[regions[index]] = number
        nearest_rows, nearest_cols = ndimage.distance_transform_edt(
            numbers == 0, return_distances=False, return_indices=True
        )
        nearest = numbers[nearest_rows, nearest_cols]
        for number, index in enumerate(members, start=1):
            shares[index] = of_class & (nearest == number)
    return shares


def _output_id(object_id: Any) -> str:
    """An object's id as its refined output is named: a mask file's stem (refine writes a JPEG
    mask `a.jpg` as `a.png`; a folder never holds both), any other id as text."""
    text = str(object_id)
    return Path(text).stem if Path(text).suffix.lower() in (".png", *LOSSY_SUFFIXES) else text


def pair_format(coarse: Path, refined: Path) -> str:
    """The format of a review's datasets: for a folder without a data.yaml, the refine run's scores
    decide when they list objects (label-maps when they list classes, instance-maps for numeric
    object ids, masks for named mask files); otherwise `samrefiner.io.formats.detect_format`, not
    strict (a flat folder of one-value PNGs is masks)."""
    if coarse.is_dir() and not (coarse / "data.yaml").is_file():
        recorded = _format_in_scores(OutputLayout.folder(refined).scores_path)
        if recorded is not None:
            return recorded
    return detect_format(coarse, strict=False)


def _format_in_scores(scores: Path) -> str | None:
    """The format a refine run's scores file shows by its first listed object; None without one."""
    if not scores.is_file():
        return None
    with open(scores, encoding="utf-8") as handle:
        for line in handle:
            objects = json.loads(line).get("objects") or []
            if objects:
                if "category_id" in objects[0]:
                    return "label-maps"
                return "instance-maps" if isinstance(objects[0]["id"], int) else "masks"
    return None


def open_pair(images: Path, coarse: Path, refined: Path, out: Path | None = None, kind: str = "auto") -> DatasetPair:
    """The coarse dataset (its writer aimed at `out`; None: only read) and the refined one, in
    `kind` or the detected format."""
    if kind == "auto":
        kind = pair_format(coarse, refined)
    if kind not in FORMATS:
        raise InputError(f"dataset format {kind!r}: expected auto or one of {', '.join(FORMATS)}")
    coarse_dataset = open_dataset(kind, coarse, images, out or refined)
    # read only: its layout points at the refine run's own files (scores) and nothing is written
    refined_dataset = open_dataset(kind, refined, images, refined)
    return DatasetPair(kind, coarse_dataset, refined_dataset, refined)


def read_predicted_ious(path: Path) -> dict[tuple[str, str], float | None]:
    """(image key, object id) -> predicted IoU from a refine run's scores file ({} when absent);
    None for an object that kept its coarse mask (null in the file)."""
    if not path.is_file():
        return {}
    scores: dict[tuple[str, str], float] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                entry = json.loads(line)
                for item in entry["objects"]:
                    value = item["predicted_iou"]
                    scores[(str(entry["image"]), str(item["id"]))] = None if value is None else float(value)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise InputError(f"{path}: line {number} is not a scores line of `samrefiner refine`") from None
    return scores


def class_names(dataset: Dataset) -> dict[Any, str]:
    """Category id -> name: COCO's categories (entries without a usable id are left out, their
    objects shown as "class <id>"); label-map classes are named by their id."""
    data = getattr(dataset, "data", None)
    categories = data.get("categories") if isinstance(data, dict) else None
    return {
        entry["id"]: str(entry.get("name", entry["id"]))
        for entry in (categories if isinstance(categories, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("id"), (int, str)) and not isinstance(entry["id"], bool)
    }


@dataclass
class ReadLog:
    """Images that could not be read (one line each) and images the refine run did not write."""

    errors: list[str] = field(default_factory=list)
    unrefined: int = 0


def review_images(pair: DatasetPair, log: ReadLog) -> Iterator[ReviewImage]:
    """Every image with both a coarse and a refined version (the others are counted in `log`)."""
    scores = read_predicted_ious(pair.refined.layout.scores_path)
    names = class_names(pair.coarse)
    for ref in pair.coarse.refs():
        if ref.key not in pair.refined_refs:
            log.unrefined += 1
            continue
        try:
            coarse, refined = pair.load(ref)
        except InputError as error:
            log.errors.append(str(error))
            continue
        objects = []
        for meta, coarse_mask, refined_mask in zip(coarse.objects, coarse.masks, refined):
            key = str(meta["id"])
            predicted_iou = scores.get((ref.key, key))
            kept_coarse = (ref.key, key) in scores and predicted_iou is None
            label = _label(meta.get("category_id"), names)
            objects.append(ReviewObject(key, label, coarse_mask, refined_mask, predicted_iou, kept_coarse))
        name = Path(coarse.image_path).relative_to(pair.coarse.images).as_posix()
        yield ReviewImage(ref.key, coarse.image_path, objects, name=name, pixels=coarse.image)


def _label(category_id: Any, names: dict[Any, str]) -> str:
    if category_id is None:
        return ""
    return names.get(category_id, f"class {category_id}")
