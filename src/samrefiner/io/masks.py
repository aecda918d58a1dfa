"""Per-object binary mask PNGs (`samrefiner refine --masks DIR`).

Layout: an image `<images>/<key>.<ext>` (key = its path relative to `--images`, without suffix,
any depth) has its objects either in a folder `<masks>/<key>/`, one file per object, or, for a
single object, in the file `<masks>/<key>.png`. So both of these work:

    images/cat.jpg     masks/cat/0.png, masks/cat/1.png          (one folder per image)
    JPEGImages/bear/00000.jpg    Annotations/bear/00000.png      (DAVIS: one mask per frame)

A mask folder is an object folder when an image of its name exists, or when no folder of images
of its name does; otherwise its PNGs are single-object masks of the images in that folder.

Mask files are PNGs (or BMP/TIFF), read by the mask-value rule of `samrefiner.io.maskvalues`;
JPEG/WebP masks are lossy: thresholded at half their maximum, with one warning per dataset and a
`warning` on each such object in scores.jsonl.

The output mirrors the input under `--out`: the same relative paths, file names and sizes, the
object written the way the input wrote it (same mode, value or colour, palette, background).
Outputs are PNG: a mask `x.jpg` comes back as `x.png` (0/255 grayscale).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from samrefiner.errors import InputError, InputWarning
from samrefiner.io.datasets import (
    Dataset,
    OutputLayout,
    Sample,
    SampleRef,
    check_mask_sizes,
    index_images,
    unique_image,
)
from samrefiner.io.images import IMAGE_SUFFIXES, read_image, read_mask_encoded, write_png
from samrefiner.io.maskvalues import LOSSY_NOTE, LOSSY_SUFFIXES


class MaskFolders(Dataset):
    """Images with per-object mask PNGs, refined into the same layout under `out`."""

    def __init__(self, images: Path, masks: Path, out: Path, *, ignore_exif: bool = False) -> None:
        if not masks.is_dir():
            raise InputError(f"{masks}: not a folder of masks")
        self.images, self.masks, self.ignore_exif = images, masks, ignore_exif
        self.layout = OutputLayout.folder(out)
        self._images = index_images(images)
        self._lossy: list[Path] = []
        self._sources = self._find_sources()
        self._warn_lossy()

    def refs(self) -> list[SampleRef]:
        return [
            SampleRef(key, str(sources[0])) for key, sources in sorted(self._sources.items())
        ]

    def input_files(self, ref: SampleRef) -> list[Path]:
        masks = [path for source in self._sources[ref.key] for path in _mask_files(source)]
        return [unique_image(self._images, ref.key, self.images, ref.name), *masks]

    def load(self, ref: SampleRef) -> Sample:
        sources = self._sources[ref.key]
        if len(sources) > 1:
            raise InputError(
                f"{ref.name}: image {ref.key} has masks in both "
                + " and ".join(str(source) for source in sources)
            )
        files = _mask_files(sources[0])
        _check_output_names(files)
        image_path = unique_image(self._images, ref.key, self.images, ref.name)
        read = [read_mask_encoded(path, ignore_exif=self.ignore_exif, warn=False) for path in files]
        image = read_image(image_path, ignore_exif=self.ignore_exif)
        check_mask_sizes(image, image_path, [mask for mask, _ in read], [str(path) for path in files])
        return Sample(
            ref,
            image_path,
            image,
            np.stack([mask for mask, _ in read]),
            [_object(path) for path in files],
            context=[(path, encoding) for path, (_, encoding) in zip(files, read)],
        )

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        for mask, (source, encoding) in zip(result.masks, sample.context):
            target = self.layout.out / source.relative_to(self.masks).with_suffix(".png")
            write_png(target, encoding.encode(mask), encoding.palette)
        return {}

    def _warn_lossy(self) -> None:
        """One InputWarning for the dataset's lossy mask files (each object also records it)."""
        if self._lossy:
            warnings.warn(
                InputWarning(
                    f"{self.masks}: {len(self._lossy)} mask(s) are JPEG/WebP (e.g. {self._lossy[0]}): each is a "
                    f"{LOSSY_NOTE}; refined masks are written as PNG"
                ),
                stacklevel=3,
            )

    def _find_sources(self) -> dict[str, list[Path]]:
        """Image key -> the mask folders or single mask files given for it (one, unless a clash);
        the lossy mask files found go to `self._lossy`."""
        image_folders = {parent.as_posix() for key in self._images for parent in Path(key).parents}
        sources: dict[str, list[Path]] = {}
        for folder, subfolders, files in os.walk(self.masks):
            folder_path = Path(folder)
            relative = folder_path.relative_to(self.masks).as_posix()
            mask_names = sorted(name for name in files if _is_mask_file(name))
            self._lossy.extend(folder_path / name for name in mask_names if name.lower().endswith(LOSSY_SUFFIXES))
            if relative != "." and mask_names and (
                relative in self._images or relative not in image_folders
            ):
                sources.setdefault(relative, []).append(folder_path)
                subfolders.clear()  # an object folder's own subfolders are not searched
                continue
            subfolders.sort()
            for name in mask_names:
                key = (folder_path / name).relative_to(self.masks).with_suffix("").as_posix()
                sources.setdefault(key, []).append(folder_path / name)
        return sources


def _is_mask_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _mask_files(source: Path) -> list[Path]:
    """The object masks of one image: a folder's mask files by name, or the single file itself."""
    if source.is_dir():
        return sorted(path for path in source.iterdir() if _is_mask_file(path.name) and path.is_file())
    return [source]


def _object(path: Path) -> dict[str, Any]:
    """An object's scores.jsonl fields: its file name, and a warning for a lossy file."""
    if path.suffix.lower() in LOSSY_SUFFIXES:
        return {"id": path.name, "warning": LOSSY_NOTE}
    return {"id": path.name}


def _check_output_names(files: list[Path]) -> None:
    """InputError when two mask files of one image would be written to the same PNG."""
    seen: dict[Path, Path] = {}
    for path in files:
        target = path.with_suffix(".png")
        if target in seen:
            raise InputError(f"{path}: both it and {seen[target].name} would be written as {target.name}; keep one")
        seen[target] = path
