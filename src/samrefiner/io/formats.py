"""Opening a dataset: the one place that knows every format's reader (masks, label maps, COCO,
instance maps, YOLO), and the one detector that tells a dataset's format from its files.

Readers without images (`samrefiner eval` scores mask and map files against each other) list and
read a folder format's files here, with the rules its dataset reads them by: `list_object_files`
and `read_object_file`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.coco import CocoDataset
from samrefiner.io.datasets import Dataset
from samrefiner.io.images import read_mask
from samrefiner.io.instancemaps import InstanceMaps
from samrefiner.io.labelmaps import LabelMaps, read_label_map
from samrefiner.io.listing import MAP_SUFFIXES, MASK_SUFFIXES, list_files
from samrefiner.io.masks import MaskFolders
from samrefiner.io.yolo import YoloDataset

FORMATS: dict[str, Callable[..., Dataset]] = {
    "masks": MaskFolders,
    "label-maps": LabelMaps,
    "coco": CocoDataset,
    "instance-maps": InstanceMaps,
    "yolo": YoloDataset,
}
"""Every dataset format by name: the one registry that refine, adapt, review and apply-review open
datasets through."""


def open_dataset(
    kind: str,
    source: Path,
    images: Path | None,
    out: Path,
    *,
    copy_images: bool = False,
    ignore_exif: bool = False,
) -> Dataset:
    """The dataset of format `kind` (a key of FORMATS) whose coarse masks are `source`, its images in
    `images` (YOLO: optional, the dataset's own folder by default; images are copied to the output
    only for YOLO), writing to `out`.

    Images and masks are read upright (EXIF orientation applied) unless `ignore_exif`."""
    if kind not in FORMATS:
        raise InputError(f"dataset format {kind!r}: expected one of {', '.join(FORMATS)}")
    if kind == "yolo":
        return YoloDataset(source, out, image_root=images, copy_images=copy_images, ignore_exif=ignore_exif)
    if copy_images:
        raise InputError(f"{source}: images are copied to the output only for YOLO datasets")
    if images is None:
        raise InputError(f"{source}: a {kind} dataset needs a folder of images")
    if not images.is_dir():
        raise InputError(f"{images}: not a folder of images")
    return FORMATS[kind](images, source, out, ignore_exif=ignore_exif)


FILE_SUFFIXES = {"masks": MASK_SUFFIXES, "label-maps": MAP_SUFFIXES, "instance-maps": MAP_SUFFIXES}
"""The suffixes of each folder format's mask or map files (the ones its dataset lists)."""


def list_object_files(kind: str, root: Path) -> dict[str, list[Path]]:
    """The mask files (`masks`) or map files (`label-maps`, `instance-maps`) under `root` by key,
    listed as that format's dataset lists them (`samrefiner.io.listing`: hidden files skipped)."""
    return list_files(root, FILE_SUFFIXES[kind])


def read_object_file(kind: str, path: Path) -> np.ndarray:
    """One file of a folder format, upright, as its dataset reads it: a mask file's object (H x W
    bool, the mask-value rule of `samrefiner.io.maskvalues`) or a map's values."""
    if kind == "masks":
        return read_mask(path)
    return read_label_map(path)[0]


DETECTION_SAMPLE = 50  # PNGs whose values `detect_format` looks at


class FormatUnclear(InputError):
    """A folder that could hold binary masks or label maps: the caller must say which."""


def detect_format(source: Path, strict: bool = True) -> str:
    """The format (a key of FORMATS) of the dataset at `source`, from its files.

    A .json file is `coco`; a folder with a data.yaml is `yolo`. For another folder, its PNGs (the
    first DETECTION_SAMPLE) decide: all in subfolders and each holding one object value (GrabCut's
    128/255 pair counts as one) is `masks`; flat with some PNG holding several values is
    `label-maps`. A folder where layout and values disagree (flat one-value PNGs: binary masks or
    one-class label maps; several values in subfolders) is refused with FormatUnclear when
    `strict`, else taken by its values alone (several: `label-maps`, else `masks`).

    `samrefiner eval` is strict: ground truth read in the wrong layout gives wrong scores, and
    its user can name the layout. Review is not: its coarse folder is a refine run's input whose
    run recorded the format (review reads that first), so this is only the fallback."""
    if source.is_file() and source.suffix.lower() == ".json":
        return "coco"
    if not source.is_dir():
        raise InputError(f"{source}: neither a folder nor a COCO .json file")
    if (source / "data.yaml").is_file():
        return "yolo"
    files = list_object_files("label-maps", source)
    nested = all("/" in key for key in files)
    sample = [paths[0] for paths in list(files.values())[:DETECTION_SAMPLE]]
    several = next((path for path in sample if _holds_several_values(path)), None)
    if nested == (several is None) or not strict:
        return "masks" if several is None else "label-maps"
    reason = (
        f"{several.relative_to(source)} holds several values, yet the PNGs lie in subfolders"
        if several is not None
        else "its PNGs each hold one object value, so they may be binary masks or one-class label maps"
    )
    raise FormatUnclear(f"{source}: cannot tell masks from label maps ({reason})")


def _holds_several_values(path: Path) -> bool:
    """Whether a single-channel PNG holds more than one nonzero value (GrabCut's 128/255 pair
    counts as one object value); other files, and unreadable ones, do not."""
    try:
        values, _ = read_label_map(path)
    except InputError:
        return False
    nonzero = set(np.unique(values).tolist()) - {0}
    return len(nonzero) > 1 and nonzero != {128, 255}
