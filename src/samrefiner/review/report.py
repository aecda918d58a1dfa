"""Build a review report: thumbnails and scores per object, then the static page."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from samrefiner.errors import InputError
from samrefiner.evaluation.metrics import mask_iou
from samrefiner.io.images import read_image
from samrefiner.review.objects import ObjectSummary, ReviewImage, ReviewObject
from samrefiner.review.page import PAGE_SIZE, THUMBNAIL_DIR, prepare_report_dir, write_page
from samrefiner.review.thumbnails import object_crop, side_by_side

JPEG_QUALITY = 85


def build_report(
    images: Iterable[ReviewImage],
    out: str | Path,
    *,
    source: str,
    title: str = "",
    page_size: int = PAGE_SIZE,
    report_id: str | None = None,
) -> list[ObjectSummary]:
    """Write `out/index.html` and its files for every object of `images`; return their summaries.

    `images` may be a generator: only one image's masks are held at a time. `report_id` (see
    `write_page`) goes into the page and into every decisions file it exports.
    """
    out = Path(out)
    prepare_report_dir(out)
    summaries: list[ObjectSummary] = []
    for image in images:
        pixels = read_image(image.path) if image.pixels is None else image.pixels
        for review_object in image.objects:
            thumbnail = f"{THUMBNAIL_DIR}/{len(summaries):06d}.jpg"
            change = _write_thumbnail(pixels, review_object, out / thumbnail, image.path)
            summaries.append(
                ObjectSummary(
                    image.image_id,
                    review_object.key,
                    review_object.label,
                    review_object.predicted_iou,
                    change,
                    thumbnail,
                    image.name or image.image_id,
                    review_object.kept_coarse,
                )
            )
    write_page(summaries, out, title=title or source, source=source, page_size=page_size, report_id=report_id)
    return summaries


def _write_thumbnail(pixels: np.ndarray, review_object: ReviewObject, path: Path, image_path: Path) -> float:
    """Save the object's side-by-side thumbnail; return IoU(coarse, refined)."""
    coarse, refined = review_object.coarse.astype(bool), review_object.refined.astype(bool)
    for name, mask in (("coarse", coarse), ("refined", refined)):
        if mask.shape != pixels.shape[:2]:
            raise InputError(
                f"{image_path}: {name} mask of object {review_object.key} is {mask.shape[1]}x{mask.shape[0]}, "
                f"the image {pixels.shape[1]}x{pixels.shape[0]}"
            )
    crop = object_crop(coarse, refined)  # holds both masks whole, so the IoU over it is exact
    Image.fromarray(side_by_side(pixels, coarse, refined, crop)).save(path, quality=JPEG_QUALITY)
    return mask_iou(crop.of(coarse), crop.of(refined))
