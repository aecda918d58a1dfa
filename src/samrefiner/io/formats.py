"""Opening a dataset: the one place that knows every format's reader (masks, label maps, COCO,
instance maps, YOLO)."""

from __future__ import annotations

from pathlib import Path

from samrefiner.errors import InputError
from samrefiner.io.coco import CocoDataset
from samrefiner.io.datasets import Dataset
from samrefiner.io.instancemaps import InstanceMaps
from samrefiner.io.labelmaps import LabelMaps
from samrefiner.io.masks import MaskFolders
from samrefiner.io.yolo import YoloDataset


def open_dataset(
    images: Path | None,
    out: Path,
    *,
    masks: Path | None,
    label_maps: Path | None,
    coco: Path | None,
    instance_maps: Path | None = None,
    yolo: Path | None = None,
    copy_images: bool = False,
    ignore_exif: bool = False,
) -> Dataset:
    """The dataset for whichever one of --masks, --label-maps, --coco, --instance-maps, --yolo was
    given (--yolo: --images may be omitted, it defaults to the YOLO folder).

    Images and masks are read upright (EXIF orientation applied) unless `ignore_exif`."""
    inputs = (
        ("--masks", masks),
        ("--label-maps", label_maps),
        ("--coco", coco),
        ("--instance-maps", instance_maps),
        ("--yolo", yolo),
    )
    given = [name for name, value in inputs if value]
    if len(given) != 1:
        raise InputError(
            f"give exactly one of --masks, --label-maps, --coco, --instance-maps, --yolo (got {len(given)})"
        )
    if copy_images and yolo is None:
        raise InputError("--copy-images is for --yolo datasets")
    if yolo is not None:
        return YoloDataset(yolo, out, image_root=images, copy_images=copy_images, ignore_exif=ignore_exif)
    if images is None:
        raise InputError(f"{given[0]} needs --images")
    if not images.is_dir():
        raise InputError(f"{images}: not a folder of images")
    if masks is not None:
        return MaskFolders(images, masks, out, ignore_exif=ignore_exif)
    if label_maps is not None:
        return LabelMaps(images, label_maps, out, ignore_exif=ignore_exif)
    if instance_maps is not None:
        return InstanceMaps(images, instance_maps, out, ignore_exif=ignore_exif)
    return CocoDataset(images, coco, out, ignore_exif=ignore_exif)
