"""Whole-image versions of the mined prompts (SPEC section 2), for any model geometry.

Each prompt is computed the short way the reference computes it: scipy distance transforms of the
whole image, similarity of every pixel, full-size torch resizes. It is slow; `PromptMiner` computes
the same prompts crop-wise, and the tests hold it to these functions. The two fixes of SPEC
section 2 are included (per-mask expanded flag; no negative point when the box holds no background).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from samrefiner.prompts import (
    NEGATIVE,
    NOT_A_POINT,
    POSITIVE,
    SAM_GEOMETRY,
    SIMILARITY_THRESHOLD,
    Geometry,
    Prompts,
    elastic_box,
    valid_embedding_size,
)

def positive_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the first mask pixel (row-major) farthest from the background."""
    distances = ndi.distance_transform_edt(mask)
    rows, cols = np.nonzero(distances == distances.max())
    return int(cols[0]), int(rows[0])


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2: the first and last foreground column and row."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def negative_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the first background pixel farthest from the mask in the box's rows y1..y2-1 and
    columns x1..x2-1; None when there is no background there."""
    x1, y1, x2, y2 = tight_box(mask)
    distances = ndi.distance_transform_edt(~mask)
    inside = np.zeros_like(mask)
    inside[y1:y2, x1:x2] = True
    distances[~inside] = 0
    if distances.max() == 0:
        return None
    rows, cols = np.nonzero(distances == distances.max())
    return int(cols[0]), int(rows[0])


class SimilarityMap:
    """CEBox's similarity test on every pixel: the valid embedding grid upsampled (bilinear) to the
    image and L2-normalised, compared with a mask's mean embedding (mask resized nearest to the grid)."""

    def __init__(
        self, embeddings: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int], geometry: Geometry
    ) -> None:
        height, width = original_size
        rows, cols = valid_embedding_size(height, width, geometry.embedding_size, input_size, geometry.image_size)
        self.grid = torch.as_tensor(embeddings).float()[:, :, :rows, :cols]
        pixels = F.interpolate(self.grid, size=(height, width), mode="bilinear", align_corners=False)[0]
        self.pixels = (pixels / pixels.norm(dim=0, keepdim=True)).permute(1, 2, 0)

    def similar(self, mask: np.ndarray) -> np.ndarray:
        """H x W bool: cosine similarity with the mask's mean embedding > 0.5."""
        small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=self.grid.shape[-2:], mode="nearest")
        query = ((self.grid * small).sum(dim=(-2, -1)) / small.sum())[0]
        return (self.pixels @ (query / query.norm()) > SIMILARITY_THRESHOLD).numpy()


def cebox(mask: np.ndarray, similar: np.ndarray, threshold: float, passes: int = 1) -> tuple[tuple[int, ...], bool]:
    """The elastic box of `mask` given its similarity map (strip fractions counted on the whole map)."""
    def count(rows: slice, cols: slice) -> int:
        return int(similar[rows, cols].sum())

    return elastic_box(tight_box(mask), count, mask.shape, threshold, passes)


def gaussian(mask: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-(dt - max dt)^2 / max(|M| / gamma, 1)) inside the mask, 0 outside (float32)."""
    distances = ndi.distance_transform_edt(mask).astype(np.float32)
    values = np.exp(-((distances - distances.max()) ** 2) / max(mask.sum() / gamma, 1))
    return np.where(mask, values, 0).astype(np.float32)


def to_mask_grid(planes: np.ndarray, fill: float, input_size: tuple[int, int], geometry: Geometry) -> torch.Tensor:
    """(N, h, w) original-size planes -> input size (bilinear) -> padded with `fill` to the input
    frame -> the mask-prompt grid (bilinear): (N, 1, M, M)."""
    frame, side = geometry.image_size, geometry.mask_input_size
    resized = F.interpolate(torch.from_numpy(planes).float()[:, None], input_size, mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, frame - input_size[1], 0, frame - input_size[0]), value=fill)
    return F.interpolate(padded, (side, side), mode="bilinear", align_corners=False)


def mask_prompts(
    masks: np.ndarray,
    expanded: np.ndarray,
    input_size: tuple[int, int],
    geometry: Geometry = SAM_GEOMETRY,
    gamma: float = 4.0,
    strength: float = 30.0,
) -> np.ndarray:
    """(N, 1, M, M) Gaussian-style mask prompts S * G of N masks (amplitude 1 where `expanded`)."""
    signs = to_mask_grid(np.where(masks, 1.0, -1.0), -1.0, input_size, geometry)
    gaussians = to_mask_grid(np.stack([gaussian(mask, gamma) for mask in masks]), 0.0, input_size, geometry)
    amplitude = torch.tensor([1.0 if moved else strength for moved in expanded])[:, None, None, None]
    signs = torch.where(signs > 0, amplitude, -amplitude)
    gaussians[gaussians <= 0] = 1.0
    return (signs * gaussians).numpy()


def reference_prompts(
    masks: np.ndarray,
    input_size: tuple[int, int],
    embeddings: torch.Tensor | None = None,
    geometry: Geometry = SAM_GEOMETRY,
    *,
    threshold: float = 0.0,
    passes: int = 1,
    gamma: float = 4.0,
    strength: float = 30.0,
) -> Prompts:
    """All prompts of N non-empty masks, as `PromptMiner(...).mine` gives them (distance points,
    negative point, CEBox when `threshold` > 0, mask prompt)."""
    similarity = SimilarityMap(embeddings, masks.shape[1:], input_size, geometry) if threshold > 0 else None
    points, labels, boxes, expanded = [], [], [], []
    for mask in masks:
        negative = negative_point(mask)
        points.append([positive_point(mask), negative if negative is not None else (0, 0)])
        labels.append([POSITIVE, NEGATIVE if negative is not None else NOT_A_POINT])
        if threshold > 0:
            box, moved = cebox(mask, similarity.similar(mask), threshold, passes)
        else:
            box, moved = tight_box(mask), False
        boxes.append(box)
        expanded.append(moved)
    expanded = np.array(expanded)
    prompts = mask_prompts(masks, expanded, input_size, geometry, gamma, strength)
    return Prompts(np.array(points, np.int64), np.array(labels, np.int64), np.array(boxes, np.int64), expanded, prompts)
