"""Masks to polygons and back in COCO's pixel-corner convention (COCO polygons, `RefineResult.to_polygons`).

Coordinates are continuous pixel coordinates `(x, y)`: pixel (row r, column c) covers
`[c, c + 1] x [r, r + 1]`, as COCO's rasteriser (pycocotools) reads polygons. Outlines run
through the middle of the edges between object and background pixels (marching squares at
level 0.5), then are simplified with Douglas-Peucker (OpenCV's approxPolyDP) at `tolerance` pixels (0: not
at all).

YOLO lines use the pixel-centre convention instead: `samrefiner.io.yolo_polygons`.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage import measure

DEFAULT_TOLERANCE = 0.25  # pixels: drops the vertices of straight runs, keeps every pixel step


def outlines(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[np.ndarray]:
    """Every outline of `mask` (outer boundaries and holes' boundaries) as a K x 2 array of
    (x, y) vertices, open (the first vertex is not repeated); outlines that simplify to fewer
    than 3 vertices are left out."""
    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    found = []
    for contour in measure.find_contours(padded, 0.5):
        corners = _corners(contour[:-1])
        if tolerance > 0 and len(corners) > 3:
            corners = cv2.approxPolyDP(corners.astype(np.float32), tolerance, True)[:, 0].astype(np.float64)
        vertices = corners[:, ::-1] - 0.5  # (row, col) in the padded array -> (x, y) in the mask
        if len(vertices) >= 3:
            found.append(vertices)
    return found


def _corners(ring: np.ndarray) -> np.ndarray:
    """The vertices of a closed ring (first vertex not repeated) where it turns."""
    before, after = ring - np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0) - ring
    turns = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    return ring[turns]


def has_holes(mask: np.ndarray) -> bool:
    """Whether some background pixels are enclosed by the mask."""
    return bool((ndimage.binary_fill_holes(mask) & ~mask.astype(bool)).any())


def coco_polygons(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[list[float]] | None:
    """A COCO polygon segmentation (one flat [x1, y1, x2, y2, ...] list per part) of `mask`, or
    None when polygons cannot hold it: a mask with holes (COCO's rasteriser fills the union of
    the polygons, so a hole would be painted over) or one without a part of 3 vertices."""
    if has_holes(mask):
        return None
    parts = outlines(mask, tolerance)
    return [part.round(2).reshape(-1).tolist() for part in parts] or None
