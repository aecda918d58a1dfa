"""Semantic label-map PNGs (VOC style: palette or grayscale, 0 background, 255 void)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.images import _open, _upright, write_png

# PIL modes whose pixels are class ids: palette, 8-bit and 16-bit grayscale.
_LABEL_MODES = ("P", "L", "I;16")


def read_label_map(path: str | Path, *, ignore_exif: bool = False) -> tuple[np.ndarray, list[int] | None]:
    """The H x W class-id array of a label-map PNG and its palette (None when grayscale), upright
    (EXIF orientation applied) unless `ignore_exif`."""
    image = _upright(_open(path), ignore_exif)
    if image.mode not in _LABEL_MODES:
        raise InputError(
            f"{path}: a label map must be a palette or grayscale image, got mode {image.mode}"
        )
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(f"{path}: a label map must have one channel, got shape {array.shape}")
    return array, (image.getpalette() if image.mode == "P" else None)


def write_label_map(path: str | Path, label_map: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a label map atomically: a palette PNG when `palette` is given, else grayscale."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or label_map.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{path}: a label map must be a 2-D uint8 or uint16 array, "
            f"got {label_map.dtype} of shape {label_map.shape}"
        )
    if palette is not None and label_map.dtype != np.uint8:
        raise ValueError(f"{path}: a palette label map must be uint8, got {label_map.dtype}")
    write_png(path, label_map, palette)
