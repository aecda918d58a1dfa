"""Refine the masks of `supervision.Detections` (needs `pip install samrefiner[supervision]`).

    import supervision as sv
    from samrefiner.integrations.supervision import refine_detections

    refined = refine_detections(refiner, image_rgb, detections)

Every detection comes back in the same order with its `class_id`, `confidence`, `tracker_id`,
`data` and `metadata` unchanged, its `mask` refined and its `xyxy` recomputed from the refined
mask (x_max, y_max the last covered pixel: supervision's "inclusive" convention; zeros for an
empty mask). Detections without masks are refined from their boxes: each box, filled, is the
coarse mask. The image is what `Refiner.refine` takes: an image file (read upright, as RGB) or an
H x W x 3 uint8 RGB array (`bgr=True` for an OpenCV `cv2.imread` array).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.images import read_image

if TYPE_CHECKING:
    import supervision as sv

    from samrefiner.refine import Refiner


def refine_detections(
    refiner: Refiner, image: np.ndarray | str | Path, detections: sv.Detections, *, bgr: bool = False
) -> sv.Detections:
    """The detections with refined masks and boxes, every other field kept (see the module)."""
    import supervision as sv

    if isinstance(image, (str, Path)):
        if bgr:
            raise InputError(f"{image}: bgr is for arrays in OpenCV's channel order; an image file is read as RGB")
        pixels = read_image(image)
    else:
        pixels = np.ascontiguousarray(np.asarray(image)[..., ::-1]) if bgr else np.asarray(image)
    coarse = coarse_masks(detections, pixels.shape[:2])
    result = refiner.refine(pixels, coarse)
    return sv.Detections(
        xyxy=result.xyxy.astype(np.float32),
        mask=result.masks,
        confidence=detections.confidence,
        class_id=detections.class_id,
        tracker_id=detections.tracker_id,
        data=dict(detections.data),
        metadata=dict(detections.metadata),
    )


def coarse_masks(detections: Any, size: tuple[int, int]) -> np.ndarray:
    """N x H x W bool: the detections' masks (dense or supervision's CompactMask), or their
    filled boxes when they have none."""
    height, width = size
    if detections.mask is not None:
        mask = detections.mask
        dense = mask.to_dense() if hasattr(mask, "to_dense") else np.asarray(mask)
        if dense.shape[1:] != (height, width):
            raise InputError(
                f"detections: masks are {dense.shape[2]}x{dense.shape[1]} but the image is {width}x{height}"
            )
        return dense.astype(bool)
    boxes = np.asarray(detections.xyxy, dtype=np.float64)
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        left, top = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
        mask[top : min(int(np.ceil(y2)) + 1, height), left : min(int(np.ceil(x2)) + 1, width)] = True
    return masks
