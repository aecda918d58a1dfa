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

import posixpath
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from samrefiner.errors import InputError, InputWarning
from samrefiner.io.datasets import (
    Dataset,
    OutputLayout,
    Sample,
    SampleContext,
    SampleRef,
    check_mask_sizes,
    context_of,
)
from samrefiner.io.images import read_image, read_mask_encoded, write_png
from samrefiner.io.listing import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    has_suffix,
    list_files,
    one_file,
)
from samrefiner.io.maskvalues import LOSSY_NOTE, LOSSY_SUFFIXES, MaskEncoding


@dataclass(frozen=True)
class MaskFile:
    """One object's mask file and how it encoded the object (its output is written the same way)."""

    path: Path
    encoding: MaskEncoding


@dataclass(frozen=True)
class MaskFilesContext(SampleContext):
    """The mask files of one image, one per object, in the order of the sample's masks."""

    files: tuple[MaskFile, ...]


class MaskFolders(Dataset):
    """Images with per-object mask PNGs, refined into the same layout under `out`."""

    def __init__(self, images: Path, masks: Path, out: Path, *, ignore_exif: bool = False) -> None:
        self.images, self.masks, self.ignore_exif = images, masks, ignore_exif
        self.layout = OutputLayout.folder(out)
        self._images = list_files(images, IMAGE_SUFFIXES, "images")
        self._sources: dict[str, Path] = {}  # image key -> its object folder or single mask file
        self._objects: dict[str, list[Path]] = {}  # image key -> its mask files
        self._find_sources(list_files(masks, MASK_SUFFIXES, "masks"))
        self._warn_lossy()

    def refs(self) -> list[SampleRef]:
        return [SampleRef(key, str(self._sources[key])) for key in sorted(self._sources)]

    def input_files(self, ref: SampleRef) -> list[Path]:
        return [one_file(self._images, ref.key, self.images, ref.name), *self._objects[ref.key]]

    def load(self, ref: SampleRef) -> Sample:
        files = self._objects[ref.key]
        image_path = one_file(self._images, ref.key, self.images, ref.name)
        read = [read_mask_encoded(path, ignore_exif=self.ignore_exif, warn=False) for path in files]
        image = read_image(image_path, ignore_exif=self.ignore_exif)
        check_mask_sizes(image, image_path, [mask for mask, _ in read], [str(path) for path in files])
        return Sample(
            ref,
            image_path,
            image,
            np.stack([mask for mask, _ in read]),
            [_object(path) for path in files],
            context=MaskFilesContext(tuple(MaskFile(path, encoding) for path, (_, encoding) in zip(files, read))),
        )

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        for mask, source in zip(result.masks, context_of(sample, MaskFilesContext).files):
            target = self.layout.out / source.path.relative_to(self.masks).with_suffix(".png")
            write_png(target, source.encoding.encode(mask), source.encoding.palette)
        return {}

    def object_files(self, sample: Sample) -> list[Path]:
        """The mask file of each of the sample's objects (a sample this dataset loaded)."""
        return [source.path for source in context_of(sample, MaskFilesContext).files]

    def _warn_lossy(self) -> None:
        """One InputWarning for the dataset's lossy mask files (each object also records it)."""
        lossy = [path for files in self._objects.values() for path in files if has_suffix(path.name, LOSSY_SUFFIXES)]
        if lossy:
            warnings.warn(
                InputWarning(
                    f"{self.masks}: {len(lossy)} mask(s) are JPEG/WebP (e.g. {lossy[0]}): each is a "
                    f"{LOSSY_NOTE}; refined masks are written as PNG"
                ),
                stacklevel=3,
            )

    def _find_sources(self, listed: dict[str, list[Path]]) -> None:
        """Each image's object folder or single mask file, from the listed mask files (layout in the
        module docstring); InputError when two images claim one mask or an image has two sources."""
        by_folder: dict[str, list[Path]] = defaultdict(list)
        for key, paths in listed.items():
            by_folder[posixpath.dirname(key)].extend(paths)
        image_folders = {parent.as_posix() for key in self._images for parent in PurePosixPath(key).parents}
        object_folders = {
            folder for folder in by_folder if folder and (folder in self._images or folder not in image_folders)
        }
        for folder, paths in sorted(by_folder.items()):
            if any(parent.as_posix() in object_folders for parent in PurePosixPath(folder).parents):
                continue  # an object folder's own subfolders are not searched
            if folder in object_folders:
                self._check_objects(folder, paths)
                self._add_source(folder, self.masks / folder, sorted(paths))
            else:
                for path in paths:
                    self._add_source(path.relative_to(self.masks).with_suffix("").as_posix(), path, [path])

    def _add_source(self, key: str, source: Path, files: list[Path]) -> None:
        claimants = self._images.get(key, [])
        if len(claimants) > 1:
            raise InputError(f"{source}: claimed by several images ({' and '.join(map(str, claimants))}): keep one")
        if key in self._sources:
            raise InputError(f"{source}: image {key} also has masks in {self._sources[key]}: keep one")
        self._sources[key], self._objects[key] = source, files

    def _check_objects(self, folder: str, paths: list[Path]) -> None:
        """InputError when a mask of an object folder is also the single mask of another image, or
        two masks of the folder would be written to one PNG."""
        for path in paths:
            other = f"{folder}/{path.stem}"
            if other in self._images:
                images = " and ".join(str(image) for image in self._images.get(folder, []) + self._images[other])
                raise InputError(f"{path}: claimed by two images ({images}): rename one")
        _check_output_names(paths)


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
