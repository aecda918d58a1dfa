"""Stand-in refiners for the dataset IO and runner tests (no model: fast and predictable)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def fake_result(masks: np.ndarray) -> SimpleNamespace:
    """A RefineResult-shaped object with these output masks and scores 0.5, 0.6, ..."""
    count = len(masks)
    flags = np.zeros(count, bool)
    return SimpleNamespace(
        masks=np.asarray(masks, bool),
        scores=0.5 + 0.1 * np.arange(count),
        candidate_scores=np.zeros((count, 3)),
        chosen=np.ones(count, int),
        empty_input=np.asarray(masks).reshape(count, -1).sum(1) == 0,
        empty_output=flags,
        prompts=SimpleNamespace(box_expanded=flags),
    )


class IdentityRefiner:
    """Gives every coarse mask back unchanged; remembers the shape of each call's masks."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def refine(self, image: np.ndarray, masks: np.ndarray) -> SimpleNamespace:
        assert image.ndim == 3 and image.shape[2] == 3 and image.shape[:2] == masks.shape[1:]
        self.calls.append(masks.shape)
        return fake_result(masks)


class BoxRefiner(IdentityRefiner):
    """Turns every mask into its filled bounding box: an output that differs from the input."""

    def refine(self, image: np.ndarray, masks: np.ndarray) -> SimpleNamespace:
        super().refine(image, masks)
        return fake_result(np.array([box_mask(mask) for mask in masks]))


def box_mask(mask: np.ndarray) -> np.ndarray:
    filled = np.zeros(mask.shape, bool)
    rows, cols = np.nonzero(mask)
    if len(rows):
        filled[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return filled


def tree_digest(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under `roots` (or of the files themselves), by path."""
    files = [path for root in roots for path in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in files if path.is_file()}
