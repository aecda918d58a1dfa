"""Thumbnails: the image around one object with the coarse and the refined mask side by side."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

PANEL_SIZE = 180  # pixels per side of each (square) panel
PANEL_GAP = 6
CONTEXT = 0.25  # margin around the object, as a fraction of its larger side
MIN_CROP = 48  # crops never shrink below this many image pixels per side
BACKGROUND = (40, 40, 40)
COARSE_COLOUR = (255, 140, 0)
REFINED_COLOUR = (0, 200, 255)
FILL_OPACITY = 0.4


class Crop(NamedTuple):
    """A window of an image: rows [top, bottom), columns [left, right)."""

    top: int
    bottom: int
    left: int
    right: int

    def of(self, array: np.ndarray) -> np.ndarray:
        return array[self.top : self.bottom, self.left : self.right]


def object_crop(coarse: np.ndarray, refined: np.ndarray) -> Crop:
    """A square-ish window holding both masks plus context, clipped to the image.

    When both masks are empty the whole image is shown.
    """
    height, width = coarse.shape
    union = coarse | refined
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return Crop(0, height, 0, width)
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    side = max(int(side * (1 + 2 * CONTEXT)), MIN_CROP)
    centre_y, centre_x = (rows[0] + rows[-1] + 1) // 2, (cols[0] + cols[-1] + 1) // 2
    top, bottom = _window(centre_y, side, height)
    left, right = _window(centre_x, side, width)
    return Crop(top, bottom, left, right)


def _window(centre: int, side: int, limit: int) -> tuple[int, int]:
    """[start, end) of length `side` around `centre`, shifted (then clipped) into [0, limit)."""
    start = min(max(centre - side // 2, 0), max(limit - side, 0))
    return start, min(start + side, limit)


def side_by_side(image: np.ndarray, coarse: np.ndarray, refined: np.ndarray, crop: Crop) -> np.ndarray:
    """An RGB uint8 picture: the crop with the coarse mask (left) and the refined mask (right)."""
    canvas = np.empty((PANEL_SIZE, 2 * PANEL_SIZE + PANEL_GAP, 3), np.uint8)
    canvas[:] = BACKGROUND
    picture = crop.of(image)
    scale = PANEL_SIZE / max(picture.shape[:2])
    size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
    resized = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top = (PANEL_SIZE - size[1]) // 2
    for panel, (mask, colour) in enumerate(((coarse, COARSE_COLOUR), (refined, REFINED_COLOUR))):
        small = cv2.resize(crop.of(mask).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        left = panel * (PANEL_SIZE + PANEL_GAP) + (PANEL_SIZE - size[0]) // 2
        canvas[top : top + size[1], left : left + size[0]] = _overlay(resized, small, colour)
    return canvas


def _overlay(picture: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The picture with the mask tinted in `colour` and outlined."""
    shown = picture.copy()
    inside = mask.astype(bool)
    shown[inside] = (shown[inside] * (1 - FILL_OPACITY) + np.array(colour) * FILL_OPACITY).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(shown, contours, -1, colour, 1)
    return shown
