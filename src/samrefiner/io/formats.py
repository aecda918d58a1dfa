"""Opening a dataset: the one place that knows every format's reader (masks, label maps, COCO,
instance maps, YOLO)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from samrefiner.errors import InputError
from samrefiner.io.coco import CocoDataset
from samrefiner.io.datasets import Dataset
from samrefiner.io.instancemaps import InstanceMaps
from samrefiner.io.labelmaps import LabelMaps
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
