"""Overlay pictures for `samrefiner refine --save-overlays`: coarse and refined side by side."""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from samrefiner.io.images import atomic_write

PANEL_SIDE = 1024  # each panel's longest side at most, so that huge images stay quick to write
ALPHA = 0.45


def object_colors(count: int) -> np.ndarray:
    """`count` distinct, bright RGB colors (golden-ratio hues), uint8."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(hue, 0.85, 1.0) for hue in hues]).reshape(-1, 3) * 255


def draw_masks(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The image with each mask filled half-transparently and outlined, one color per object."""
    colors = object_colors(len(masks))
    canvas = image.astype(np.float32)
    for mask, color in zip(masks, colors):
        canvas[mask] = (1 - ALPHA) * canvas[mask] + ALPHA * color
    drawn = np.ascontiguousarray(canvas.astype(np.uint8))
    for mask, color in zip(masks, colors):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(drawn, contours, -1, tuple(int(value) for value in color), 2)
    return drawn


def side_by_side(image: np.ndarray, coarse: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """Coarse masks on the left, refined ones on the right, panels at most PANEL_SIDE px."""
    scale = min(1.0, PANEL_SIDE / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        coarse, refined = (_resize_masks(masks, size) for masks in (coarse, refined))
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([draw_masks(image, coarse), gap, draw_masks(image, refined)], axis=1)


def write_overlay(path: Path, image: np.ndarray, coarse: np.ndarray, refined: np.ndarray) -> None:
    """Write the side-by-side picture as a PNG, atomically (fast compression: it is a preview)."""
    picture = Image.fromarray(side_by_side(image, np.asarray(coarse, bool), np.asarray(refined, bool)))
    atomic_write(path, lambda handle: picture.save(handle, format="PNG", compress_level=1))


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.array(
        [cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0 for mask in masks]
    ).reshape(len(masks), size[1], size[0])
