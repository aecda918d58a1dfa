"""Semantic label-map PNGs (VOC style: palette or grayscale, 0 background, 255 void): reading,
writing, and the label-map dataset format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.datasets import (
    Dataset,
    OutputLayout,
    Sample,
    SampleContext,
    SampleRef,
    check_claims,
    check_mask_sizes,
    context_of,
)
from samrefiner.io.images import _open, _upright, read_image, write_png
from samrefiner.io.listing import IMAGE_SUFFIXES, MAP_SUFFIXES, list_files, one_file
from samrefiner.regions import BACKGROUND, VOID, paint_back, split_then_merge

# PIL modes whose pixels are class ids: palette, 8-bit and 16-bit grayscale.
_LABEL_MODES = ("P", "L", "I;16")


def read_label_map(path: str | Path, *, ignore_exif: bool = False) -> tuple[np.ndarray, list[int] | None]:
    """The H x W class-id array of a label-map PNG and its palette (None when grayscale), upright
    (EXIF orientation applied) unless `ignore_exif`."""
    image = _upright(_open(path), ignore_exif)
    if image.mode not in _LABEL_MODES:
        raise InputError(f"{path}: a label map must be a palette or grayscale image, got mode {image.mode}")
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(f"{path}: a label map must have one channel, got shape {array.shape}")
    return array, (image.getpalette() if image.mode == "P" else None)


def write_label_map(path: str | Path, label_map: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a label map atomically: a palette PNG when `palette` is given, else grayscale."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or label_map.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{path}: a label map must be a 2-D uint8 or uint16 array, got {label_map.dtype} of shape {label_map.shape}"
        )
    if palette is not None and label_map.dtype != np.uint8:
        raise ValueError(f"{path}: a palette label map must be uint8, got {label_map.dtype}")
    write_png(path, label_map, palette)


@dataclass(frozen=True)
class LabelMapContext(SampleContext):
    """One image's map: its file, its values and its palette (None when grayscale)."""

    path: Path
    label_map: np.ndarray
    palette: list[int] | None


class LabelMaps(Dataset):
    """Semantic label-map PNGs (`--label-maps DIR`): `<maps>/<key>.png` for `<images>/<key>.*`.

    Each map is split into regions (split-then-merge) once, in `load`; the regions are refined as
    instances and painted back by `write` with `samrefiner.regions.paint_back` (the rules of
    `refine_label_map`); the output map has the input's
    relative path, size, dtype and palette. Object ids in the scores are region indices.
    """

    kind, value_name = "label maps", "class"  # in messages

    def __init__(self, images: Path, label_maps: Path, out: Path, *, ignore_exif: bool = False) -> None:
        self.images, self.label_maps, self.ignore_exif = images, label_maps, ignore_exif
        self.layout = OutputLayout.folder(out)
        self._images = list_files(images, IMAGE_SUFFIXES, "images")
        maps = list_files(label_maps, MAP_SUFFIXES, self.kind)
        check_claims(maps, self._images, self.kind[:-1])
        self._maps = {key: paths[0] for key, paths in maps.items()}

    def refs(self) -> list[SampleRef]:
        return [SampleRef(key, str(path)) for key, path in self._maps.items()]

    def input_files(self, ref: SampleRef) -> list[Path]:
        return [one_file(self._images, ref.key, self.images, ref.name), self._maps[ref.key]]

    def load(self, ref: SampleRef) -> Sample:
        path, label_map, palette, image_path, image = self._read(ref)
        regions = split_then_merge(label_map)
        masks = np.stack([mask for _, mask in regions]) if regions else np.zeros((0, *label_map.shape), bool)
        objects = [{"id": index, "category_id": class_id} for index, (class_id, _) in enumerate(regions)]
        return Sample(ref, image_path, image, masks, objects, context=LabelMapContext(path, label_map, palette))

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        context = context_of(sample, LabelMapContext)
        if len(result.masks) != len(sample.objects):
            raise RuntimeError(f"{len(result.masks)} refined masks for {len(sample.objects)} regions")
        refined = paint_back(context.label_map, [meta["category_id"] for meta in sample.objects], result)
        write_label_map(self.layout.out / context.path.relative_to(self.label_maps), refined, context.palette)
        return {}

    def map_file(self, ref: SampleRef) -> Path:
        """The map file of one image of the dataset."""
        return self._maps[ref.key]

    def _read(self, ref: SampleRef) -> tuple[Path, np.ndarray, list[int] | None, Path, np.ndarray]:
        """The map (path, values, palette) and its image (path, pixels), checked to match.

        A map of only background and void (0/255) is a binary mask: InputError, not 0 objects."""
        path = self._maps[ref.key]
        label_map, palette = read_label_map(path, ignore_exif=self.ignore_exif)
        if set(np.unique(label_map).tolist()) == {BACKGROUND, VOID}:
            raise InputError(
                f"{path}: holds only 0 and 255 (void), no {self.value_name} id: "
                "a binary mask? read the folder as per-object masks"
            )
        image_path = one_file(self._images, ref.key, self.images, ref.name)
        image = read_image(image_path, ignore_exif=self.ignore_exif)
        check_mask_sizes(image, image_path, [label_map], [ref.name])
        return path, label_map, palette, image_path, image
