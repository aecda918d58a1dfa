"""Per-object binary mask PNGs (`samrefiner refine --masks DIR`).

Layout: an image `<images>/<key>.<ext>` (key = its path relative to `--images`, without suffix,
any depth) has its objects either in a folder `<masks>/<key>/`, one PNG per object (0/255 or
0/1), or, for a single object, in the file `<masks>/<key>.png`. So both of these work:

    images/cat.jpg     masks/cat/0.png, masks/cat/1.png          (one folder per image)
    JPEGImages/bear/00000.jpg    Annotations/bear/00000.png      (DAVIS: one mask per frame)

A mask folder is an object folder when an image of its name exists, or when no folder of images
of its name does; otherwise its PNGs are single-object masks of the images in that folder.

The output mirrors the input under `--out`: the same relative paths and file names, the same
sizes, foreground written as the input's (1 for 0/1 masks, else 255), background 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samrefiner.errors import InputError
from samrefiner.io.datasets import (
    Dataset,
    OutputLayout,
    Sample,
    SampleRef,
    check_mask_sizes,
    index_images,
    unique_image,
)
from samrefiner.io.images import read_image, read_mask, write_png


class MaskFolders(Dataset):
    """Images with per-object mask PNGs, refined into the same layout under `out`."""

    def __init__(self, images: Path, masks: Path, out: Path) -> None:
        if not masks.is_dir():
            raise InputError(f"{masks}: not a folder of masks")
        self.images, self.masks = images, masks
        self.layout = OutputLayout.folder(out)
        self._images = index_images(images)
        self._sources = self._find_sources()

    def refs(self) -> list[SampleRef]:
        return [
            SampleRef(key, str(sources[0])) for key, sources in sorted(self._sources.items())
        ]

    def load(self, ref: SampleRef) -> Sample:
        sources = self._sources[ref.key]
        if len(sources) > 1:
            raise InputError(
                f"{ref.name}: image {ref.key} has masks in both "
                + " and ".join(str(source) for source in sources)
            )
        files = _mask_files(sources[0])
        image_path = unique_image(self._images, ref.key, self.images, ref.name)
        masks = [read_mask(path) for path in files]
        image = read_image(image_path)
        check_mask_sizes(image, image_path, masks, [str(path) for path in files])
        return Sample(
            ref,
            image_path,
            image,
            np.stack(masks),
            [{"id": path.name} for path in files],
            context=[(path, _foreground_value(path)) for path in files],
        )

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        for mask, (source, foreground) in zip(result.masks, sample.context):
            target = self.layout.out / source.relative_to(self.masks)
            write_png(target, mask.astype(np.uint8) * np.uint8(foreground))
        return {}

    def _find_sources(self) -> dict[str, list[Path]]:
        """Image key -> the mask folders or single mask files given for it (one, unless a clash)."""
        image_folders = {parent.as_posix() for key in self._images for parent in Path(key).parents}
        sources: dict[str, list[Path]] = {}
        for folder, subfolders, files in os.walk(self.masks):
            folder_path = Path(folder)
            relative = folder_path.relative_to(self.masks).as_posix()
            pngs = sorted(name for name in files if name.lower().endswith(".png"))
            if relative != "." and pngs and (
                relative in self._images or relative not in image_folders
            ):
                sources.setdefault(relative, []).append(folder_path)
                subfolders.clear()  # an object folder's own subfolders are not searched
                continue
            subfolders.sort()
            for name in pngs:
                key = (folder_path / name).relative_to(self.masks).with_suffix("").as_posix()
                sources.setdefault(key, []).append(folder_path / name)
        return sources


def _mask_files(source: Path) -> list[Path]:
    """The object masks of one image: a folder's PNGs by name, or the single file itself."""
    if source.is_dir():
        return sorted(path for path in source.iterdir() if path.suffix.lower() == ".png")
    return [source]


def _foreground_value(path: Path) -> int:
    """1 for a 0/1 mask file, else 255: refined masks are written the way they came."""
    with Image.open(path) as image:
        extrema = image.getextrema()
    highest = max(band[1] for band in extrema) if isinstance(extrema[0], tuple) else extrema[1]
    return 1 if highest <= 1 else 255
