"""COCO instance annotations (`samrefiner refine --coco FILE`).

Two kinds of file are read:
- ground-truth style: a dict with `images` (id, file_name, height, width) and `annotations`
  (id, image_id, category_id, segmentation as polygons, uncompressed RLE or compressed RLE);
- a results list: `[{"image_id", "category_id", "segmentation", "score"}, ...]`; it names no
  files, so image id 42 is the image under `--images` whose name is `42`, zero-padded
  (`000000000042.jpg`) or COCO-2014 style (`COCO_val2014_000000000042.jpg`).

Polygon parts that cover no area (fewer than 3 points, or zero area: pycocotools rasterises
them to nothing) are dropped, with an InputWarning and a `warning` on the object in the scores
file; an object whose every part is degenerate is an empty coarse mask. A malformed part (not a
flat, even-length list of finite numbers) is an InputError that fails its image.

Each image's file lies at `--images/<file_name>`. The output has the input's kind and order:
every annotation that was refined gets a compressed-RLE `segmentation` (`counts` a str), and a
recomputed `bbox` and `area`; all other fields, ids and the rest of the file are kept as they
are. With `segmentation_kind` (`--coco-segmentation`) "polygons", or "input" for an annotation
that came as polygons, the refined mask is written as COCO polygons instead
(`samrefiner.io.polygons.coco_polygons`); a mask with holes, which COCO polygons cannot hold, or
too small for a polygon is written as RLE, and the run reports how many. Crowd annotations (`iscrowd: 1`) and
annotations of images that were not refined (failed,
outside `--limit`/`--shard`) are copied unchanged.

Per-object ids in the scores file are the annotations' `id` (their position in the list for a
results list, which has no ids).

Identity is checked when the file is opened, before any model loads (InputError naming both
entries): annotation ids are unique in the file, image ids and file names unique in `images`.
Malformed values fail only their image (`CocoIndex.problems`, `decode_segmentation`): ids that
are neither integers nor strings (`2.0`), a `file_name` that is not a name, RLE sizes that are
not `[height, width]`, counts that are not run lengths or ASCII, polygon points that are not
finite or lie more than POLYGON_REACH image sizes outside the image (pycocotools crashes on
huge ones). A results list keeps exactly its keys (`refined_annotation`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from samrefiner.errors import InputError, InputWarning
from samrefiner.io.coco_index import CocoIndex, check_unique, id_problem
from samrefiner.io.datasets import (
    Dataset,
    OutputLayout,
    Sample,
    SampleContext,
    SampleRef,
    check_mask_sizes,
    context_of,
)
from samrefiner.io.images import atomic_write, read_image
from samrefiner.io.json_files import load_json
from samrefiner.io.listing import IMAGE_SUFFIXES, list_files
from samrefiner.io.polygons import coco_polygons
from samrefiner.io.rle import encode_mask


@dataclass(frozen=True)
class CocoContext(SampleContext):
    """Where one image's annotations lie in the file's list, in the order of the sample's masks."""

    indices: tuple[int, ...]


class CocoDataset(Dataset):
    """A COCO annotation file over a folder of images; refined into a .json of the same kind."""

    segmentation_kind = "rle"  # or "polygons", or "input": each annotation in the kind it came in
    report_line = ""

    def __init__(self, images: Path, annotations: Path, out: Path, *, ignore_exif: bool = False) -> None:
        if out.suffix.lower() != ".json":
            raise InputError(f"{out}: a COCO output must be a .json file")
        self.images, self.annotations_path, self.ignore_exif = images, annotations, ignore_exif
        self.layout = OutputLayout.file(out)
        self.index = CocoIndex.build(annotations)  # annotations stay in the file until an image needs them
        self._by_image = self.index.by_image
        self._entries = {entry["id"]: entry for entry in self.index.images}
        self._id_of_key = self._keys()
        self._files = self._image_files()

    def _keys(self) -> dict[str, Any]:
        """Image key (the id as text) -> image id; an image entry's id names its image (2 where an
        annotation wrote 2.0, which equals it). InputError when two ids have one key (2 and "2")."""
        keys: dict[str, Any] = {}
        for image_id in self._by_image:
            key = str(image_id)
            if key in keys:
                raise InputError(
                    f"{self.annotations_path}: image ids {keys[key]!r} and {image_id!r} name one image {key}"
                )
            keys[key] = image_id
        return keys | {str(image_id): image_id for image_id in self._entries if image_id in self._by_image}

    @property
    def data(self) -> dict[str, Any] | None:
        """The file's top-level dict, "annotations" left out (None); None for a results list."""
        return self.index.top

    @property
    def is_results(self) -> bool:
        return self.index.is_results

    def refs(self) -> list[SampleRef]:
        if self.is_results:
            order = sorted(self._by_image, key=str)
        else:
            order = [entry["id"] for entry in self.index.images if entry["id"] in self._by_image]
            order += [image_id for image_id in self._by_image if image_id not in self._entries]
        return [SampleRef(str(image_id), self._describe(image_id)) for image_id in order]

    def input_files(self, ref: SampleRef) -> list[Path]:
        """The image file (the annotation file is one input of the whole run: see samrefiner.run.manifest)."""
        return [self._image_path(self._id_of_key[ref.key])]

    def load(self, ref: SampleRef) -> Sample:
        image_id = self._id_of_key[ref.key]
        if image_id in self.index.problems:
            raise InputError(self.index.problems[image_id])
        image_path = self._image_path(image_id)
        image = read_image(image_path, ignore_exif=self.ignore_exif)
        height, width = image.shape[:2]
        self._check_declared_size(image_id, image_path, height, width)
        indices = self._by_image[image_id]
        annotations = self._annotations()
        decoded = [self._decode(annotations[index], index, height, width) for index in indices]
        masks = [mask for mask, _ in decoded]
        names = [self._describe_annotation(index) for index in indices]
        check_mask_sizes(image, image_path, masks, names)
        objects = [
            {"id": annotations[index].get("id", index), "category_id": annotations[index].get("category_id")}
            | ({"warning": "; ".join(notes)} if notes else {})
            for index, (_, notes) in zip(indices, decoded)
        ]
        return Sample(ref, image_path, image, np.stack(masks), objects, context=CocoContext(tuple(indices)))

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        """Nothing is written yet: the refined annotations wait in the record for `finalize`."""
        annotations = self._annotations()
        refined = [
            [index, refined_annotation(annotations[index], mask, self.segmentation_kind, results=self.is_results)]
            for index, mask in zip(context_of(sample, CocoContext).indices, result.masks)
        ]
        return {"annotations": refined, "kept_rle": _kept_rle(annotations, refined, self.segmentation_kind)}

    def finalize(self, outputs: Mapping[str, dict[str, Any]]) -> None:
        """Write the output JSON (streamed): the input with every refined annotation replaced."""
        refined = ((index, annotation) for output in outputs.values() for index, annotation in output["annotations"])
        atomic_write(self.layout.out, lambda handle: self.index.write_json(handle, refined))
        kept = sum(output.get("kept_rle", 0) for output in outputs.values()) if self.segmentation_kind != "rle" else 0
        if self.segmentation_kind == "polygons" or kept:  # nothing to say of RLE written as RLE
            self.report_line = f"polygons: {kept} refined annotations kept as RLE (holes, or too small for a polygon)"

    def _annotations(self) -> Sequence[dict[str, Any]]:
        return self.index.annotations

    def _image_files(self) -> dict[Any, list[Path]]:
        """Image id -> its file (ground truth), or the files whose name is the id (results)."""
        if not self.is_results:
            return {
                image_id: [self.images / entry["file_name"]]
                for image_id, entry in self._entries.items()
                if image_id not in self.index.problems
            }
        by_id: dict[Any, list[Path]] = defaultdict(list)
        wanted = {str(image_id): image_id for image_id in self._by_image}
        for key, paths in list_files(self.images, IMAGE_SUFFIXES, "images").items():
            stem = Path(key).name
            image_id = wanted.get(stem, wanted.get(_numeric_id(stem)))
            if image_id is not None:
                by_id[image_id].extend(paths)
        return dict(by_id)

    def _image_path(self, image_id: Any) -> Path:
        found = self._files.get(image_id)
        if not found:
            where = f"{self.images}" if self.is_results else "the 'images' list"
            raise InputError(f"{self.annotations_path}: image id {image_id} has no image in {where}")
        if len(found) > 1:
            names = ", ".join(path.name for path in found)
            raise InputError(f"{self.images}: several images for image id {image_id} ({names})")
        return found[0]

    def _check_declared_size(self, image_id: Any, path: Path, height: int, width: int) -> None:
        if self.is_results:
            return
        entry = self._entries[image_id]
        declared = (entry.get("height", height), entry.get("width", width))
        if declared != (height, width):
            raise InputError(
                f"{path}: image is {width}x{height} but {self.annotations_path} says {declared[1]}x{declared[0]}"
            )

    def _decode(self, annotation: dict[str, Any], index: int, height: int, width: int) -> tuple[np.ndarray, list[str]]:
        """The annotation's mask and what was dropped from it (each also an InputWarning)."""
        notes: list[str] = []
        try:
            mask = decode_segmentation(annotation["segmentation"], height, width, notes)
        except InputError as error:
            raise InputError(f"{self._describe_annotation(index)}: {error}") from None
        for note in notes:
            warnings.warn(InputWarning(f"{self._describe_annotation(index)}: {note}"), stacklevel=3)
        return mask, notes

    def _describe(self, image_id: Any) -> str:
        found = self._files.get(image_id)
        return str(found[0]) if found else f"{self.annotations_path} (image id {image_id})"

    def _describe_annotation(self, index: int) -> str:
        annotation = self._annotations()[index]
        label = f"annotation id {annotation['id']}" if "id" in annotation else f"annotation #{index}"
        return f"{self.annotations_path}: {label}"


def read_ground_truth(path: Path) -> tuple[dict[str, Any], dict[Any, tuple[int, int]]]:
    """A whole COCO ground-truth file (what scoring reads) and its image sizes by id; InputError
    naming it when it is not one (`_checked_ground_truth`), breaks the identity rule
    (`check_identity`) or holds a segmentation `decode_segmentation` refuses."""
    truth = load_json(path)
    sizes = _checked_ground_truth(truth, path)
    check_identity(path, truth)
    check_segmentations(path, truth["annotations"], sizes)
    return truth, sizes


def read_predictions(path: Path) -> list[Any]:
    """The annotations of a whole COCO file or results list (each checked later, by its reader);
    InputError naming it when it is neither or breaks the identity rule (`check_identity`)."""
    predicted = load_json(path)
    check_identity(path, predicted)
    predictions = predicted.get("annotations") if isinstance(predicted, dict) else predicted
    if not isinstance(predictions, list):
        raise InputError(f"{path}: not a COCO annotation file or results list")
    return predictions


def _checked_ground_truth(truth: Any, path: Path) -> dict[Any, tuple[int, int]]:
    """Image id -> (height, width); InputError naming `path` when it is not COCO ground truth."""
    if not isinstance(truth, dict) or not all(isinstance(truth.get(key), list) for key in ("annotations", "images")):
        raise InputError(f"{path}: ground truth must be a COCO file with 'images' and 'annotations' lists")
    for kind, entries, keys in (
        ("image", truth["images"], ("id", "height", "width")),
        ("annotation", truth["annotations"], ("id", "image_id", "category_id", "segmentation")),
    ):
        for index, entry in enumerate(entries):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise InputError(f"{path}: {kind} #{index} has no {missing[0]!r}")
    sizes = {image["id"]: (image["height"], image["width"]) for image in truth["images"]}
    strays = [annotation["id"] for annotation in truth["annotations"] if annotation["image_id"] not in sizes]
    if strays:
        raise InputError(f"{path}: annotation id {strays[0]} names an image id that is not in 'images'")
    return sizes


def check_identity(path: Path, data: Any) -> None:
    """InputError when a parsed COCO file (a dict or a results list) has an id that is neither an
    integer nor a string (`id_problem`: 2.0, true), gives two annotations one id, or two images one
    id or file name: the rules `CocoDataset` applies, for readers of whole files (which cannot skip
    an image, so the file is refused)."""
    annotations = data.get("annotations") if isinstance(data, dict) else data
    images = data.get("images") if isinstance(data, dict) else None
    for kind, entries, keys in (("image", images, ("id",)), ("annotation", annotations, ("id", "image_id"))):
        for number, entry in enumerate(entries if isinstance(entries, list) else []):
            for key in keys:
                if isinstance(entry, dict) and key in entry and (problem := id_problem(key, entry[key])):
                    raise InputError(f"{path}: {kind} #{number}: {problem}")
    check_unique(path, "annotations", annotations)
    if images is not None:
        check_unique(path, "images", images)
        check_unique(path, "images", images, "file_name")


def check_segmentations(path: Path, annotations: list[dict[str, Any]], sizes: Mapping[Any, tuple[int, int]]) -> None:
    """InputError naming the first annotation whose segmentation `decode_segmentation` refuses
    (`sizes`: image id -> (height, width)): run before pycocotools sees a whole file."""
    for number, annotation in enumerate(annotations):
        try:
            decode_segmentation(annotation["segmentation"], *sizes[annotation["image_id"]])
        except InputError as error:
            label = f"annotation id {annotation['id']}" if "id" in annotation else f"annotation #{number}"
            raise InputError(f"{path}: {label}: {error}") from None


_ID_NAME = re.compile(r"(?:COCO_[A-Za-z]+\d{4}_)?0*(\d+)")


def _numeric_id(stem: str) -> str | None:
    """The image id a results-list file name stands for: `42`, `000000000042` or
    `COCO_val2014_000000000042` give "42"; None for other names."""
    match = _ID_NAME.fullmatch(stem)
    return match.group(1) if match else None


def decode_segmentation(segmentation: Any, height: int, width: int, notes: list[str] | None = None) -> np.ndarray:
    """An H x W bool mask from COCO polygons, uncompressed or compressed RLE (InputError if bad).

    Polygon parts covering no area (fewer than 3 points, zero area) are dropped; each dropped part
    is described in `notes` when given."""
    if isinstance(segmentation, list):
        parts = _polygon_parts(segmentation, height, width, notes if notes is not None else [])
        if not parts:
            return np.zeros((height, width), bool)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, height, width))) > 0
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= segmentation.keys():
        raise InputError("segmentation is neither a polygon list nor an RLE")
    return mask_utils.decode(_checked_rle(segmentation, height, width)) > 0


def _checked_rle(segmentation: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """The RLE in pycocotools' compressed form, after checking its size and counts (InputError)."""
    size = segmentation["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_integer(side) for side in size)):
        raise InputError(f"RLE size {json.dumps(size)} is not [height, width]")
    if size != [height, width]:
        raise InputError(f"RLE size {size} (h, w) does not match the image's [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        _check_counts(counts, height, width)
        return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    if isinstance(counts, str) and not counts.isascii():
        raise InputError("RLE counts string holds characters outside ASCII")
    if not isinstance(counts, (str, bytes)):
        raise InputError("RLE counts must be a list of run lengths or a string")
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    _check_counts(_compressed_counts(counts, height * width), height, width)
    return {"size": [height, width], "counts": counts}


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _polygon_parts(polygons: list[Any], height: int, width: int, notes: list[str]) -> list[list[float]]:
    """The parts that cover an area; the others are described in `notes` (InputError if malformed
    or reaching further than POLYGON_REACH image sizes outside the image)."""
    if not polygons:
        raise InputError("bad polygon: empty polygon list")
    kept = []
    for number, polygon in enumerate(polygons, start=1):
        if (
            not isinstance(polygon, list)
            or len(polygon) % 2
            or not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in polygon)
        ):
            raise InputError("bad polygon: each must be a flat list of (x, y) pairs of numbers")
        _check_reach(polygon, number, height, width)
        if len(polygon) < 6:
            notes.append(f"dropped polygon part {number} of {len(polygons)} (fewer than 3 points)")
        elif _shoelace_area(polygon) == 0:
            notes.append(f"dropped polygon part {number} of {len(polygons)} (zero area)")
        else:
            kept.append(polygon)
    return kept


POLYGON_REACH = 1  # polygon points may lie up to this many image widths (heights) outside the image


def _check_reach(polygon: list[float], number: int, height: int, width: int) -> None:
    """InputError when a point is not finite or lies further outside the image than POLYGON_REACH
    sizes (such values are typos, and pycocotools crashes on huge ones)."""
    points = np.asarray(polygon, np.float64).reshape(-1, 2)
    low = -POLYGON_REACH * np.array([width, height], np.float64)
    high = (1 + POLYGON_REACH) * np.array([width, height], np.float64)
    bad = ~(np.isfinite(points).all(axis=1) & (points >= low).all(axis=1) & (points <= high).all(axis=1))
    if bad.any():
        x, y = points[np.flatnonzero(bad)[0]]
        raise InputError(
            f"bad polygon: part {number} has the point ({x:g}, {y:g}), outside [{low[0]:g}, {high[0]:g}] x "
            f"[{low[1]:g}, {high[1]:g}] for a {width}x{height} image"
        )


def _shoelace_area(polygon: list[float]) -> float:
    x, y = np.asarray(polygon[0::2], np.float64), np.asarray(polygon[1::2], np.float64)
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


_LONGEST_RUN_CODE = 12  # characters: 60 bits, more than any image's pixel count needs


def _compressed_counts(counts: bytes, pixels: int) -> np.ndarray:
    """Run lengths (int64) of a compressed COCO RLE string (the inverse of pycocotools'
    rleToString): each run is a little-endian group of 5-bit digits (character - 48), bit 0x20
    marking that another digit follows, the last digit's bit 0x10 its sign; from the fourth run
    on, the run two places back is added. A value or run beyond `pixels` (the image's pixel count)
    is refused."""
    codes = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if not len(codes):
        return codes
    if ((codes < 0) | (codes >= 64)).any():
        bad = counts[int(np.flatnonzero((codes < 0) | (codes >= 64))[0])]
        raise InputError(f"RLE string has a character out of range: {chr(bad)!r}")
    if codes[-1] & 0x20:
        raise InputError("RLE string ends in the middle of a run length")
    last = np.flatnonzero(~codes & 0x20)  # the last digit of each run
    first = np.concatenate([[0], last[:-1] + 1])
    digit = np.arange(len(codes)) - np.repeat(first, last - first + 1)  # each character's place in its run
    if digit.max() >= _LONGEST_RUN_CODE:
        raise InputError("RLE string has a run length too long for any image")
    values = np.add.reduceat((codes & 0x1F) << (5 * digit), first)
    negative = (codes[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (digit[last[negative]] + 1))
    if np.abs(values).max() > pixels:
        raise InputError(f"RLE string has a run length beyond the image's {pixels} pixels")
    values[3::2] = np.cumsum(values[1::2])[1:]  # runs from the fourth on: plus the run two back
    values[4::2] = np.cumsum(values[2::2])[1:]
    if values.max() > pixels:  # (so that their sum cannot overflow)
        raise InputError(f"RLE string has a run length beyond the image's {pixels} pixels")
    return values


def _check_counts(counts: list[Any] | np.ndarray, height: int, width: int) -> None:
    if isinstance(counts, list):
        if not all(_is_integer(run) and run >= 0 for run in counts):
            raise InputError("RLE run lengths must be non-negative integers")
        total = sum(counts)
    else:
        if (counts < 0).any():
            raise InputError("RLE run lengths must be non-negative integers")
        total = int(counts.sum())
    if total != height * width:
        raise InputError(f"RLE run lengths add up to {total}, not {height}x{width} pixels")


def refined_annotation(
    annotation: dict[str, Any], mask: np.ndarray, kind: str = "rle", *, results: bool = False
) -> dict[str, Any]:
    """A copy of `annotation` with the refined mask: as compressed RLE, or as polygons (`kind`
    "polygons", or "input" for an annotation given as polygons) when polygons can hold it; with
    `bbox` and `area` of the written segmentation as pycocotools computes them (maskUtils.toBbox,
    maskUtils.area). An entry of a results list (`results`) keeps exactly its keys: `bbox` and
    `area` are recomputed only where they came in (COCO.loadRes takes its bbox branch, and the
    box's area, for a result with a `bbox`)."""
    rle = encode_mask(mask)
    height, width = rle["size"]
    polygons = coco_polygons(mask) if _wants_polygons(annotation, kind) else None
    written = (
        mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        if polygons
        else {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    )
    geometry = {"bbox": [float(value) for value in mask_utils.toBbox(written)], "area": int(mask_utils.area(written))}
    if results:
        geometry = {key: value for key, value in geometry.items() if key in annotation}
    return {**annotation, "segmentation": polygons or rle, **geometry}


SEGMENTATION_KINDS = ("rle", "polygons", "input")


def _wants_polygons(annotation: dict[str, Any], kind: str) -> bool:
    return kind == "polygons" or (kind == "input" and isinstance(annotation.get("segmentation"), list))


def _kept_rle(annotations: list[dict[str, Any]], refined: list[list[Any]], kind: str) -> int:
    """How many refined annotations meant to be polygons had to stay RLE."""
    return sum(
        _wants_polygons(annotations[index], kind) and isinstance(annotation["segmentation"], dict)
        for index, annotation in refined
    )
