"""Whole-image prompts written from /work/shared/SPEC.md section 2, for any model geometry: the
readable twin that the crop-wise miner (`samrefiner.prompts`, `samrefiner.mask_prompt`) answers to.

Each prompt is computed the short way the reference computes it: scipy distance transforms of the
whole image, similarity of every pixel, full-size torch resizes. Nothing here comes from
`samrefiner`: a change to the miner's rules (CEBox, box slices, the mask prompt) shows up as a
difference. The two fixes of SPEC section 2 are included (per-mask expanded flag; no negative point
when the box holds no background). `geometry` is anything with image_size, embedding_size and
mask_input_size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

POSITIVE, NEGATIVE, NOT_A_POINT = 1, 0, -1
SIMILAR = 0.5  # SPEC 2: Sim = (pixel . query) > 0.5


class ReferencePrompts(NamedTuple):
    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    box_expanded: np.ndarray
    mask_inputs: np.ndarray


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


def valid_grid(height: int, width: int, input_size: tuple[int, int], geometry) -> tuple[int, int]:
    """Embedding rows and columns covering the resized image: all of the grid when the image fills
    the input frame, else rows 0..int(E*h/w) when w >= h (columns likewise)."""
    side = geometry.embedding_size
    if tuple(input_size) == (geometry.image_size, geometry.image_size):
        return side, side
    return (side, int(side * width / height)) if height >= width else (int(side * height / width), side)


def similarity_map(embeddings: torch.Tensor, mask: np.ndarray, input_size: tuple[int, int], geometry) -> np.ndarray:
    """H x W bool: the valid embedding upsampled (bilinear) to the image, L2-normalised per pixel,
    dot product with the mask's unit mean embedding (mask resized nearest to the grid) > 0.5."""
    rows, cols = valid_grid(*mask.shape, input_size, geometry)
    grid = torch.as_tensor(embeddings).float()[:, :, :rows, :cols]
    pixels = F.interpolate(grid, size=mask.shape, mode="bilinear", align_corners=False)[0]
    pixels = pixels / pixels.norm(dim=0, keepdim=True)
    small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(rows, cols), mode="nearest")
    query = ((grid * small).sum(dim=(-2, -1)) / small.sum())[0]
    query = query / query.norm()
    return (torch.einsum("chw,c->hw", pixels, query) > SIMILAR).numpy()


def cebox(mask: np.ndarray, similar: np.ndarray, threshold: float, passes: int = 1) -> tuple[tuple[int, ...], bool]:
    """SPEC 2, CEBox: each side tested against the box the pass started from; a side moves when
    its strip's share of similar pixels exceeds `threshold`; a pass that moves nothing ends it."""
    height, width = mask.shape
    box, expanded = tight_box(mask), False
    for _ in range(passes):
        x1, y1, x2, y2 = box
        if x2 == x1 or y2 == y1:
            break
        sh, sw = min(0.1 * (y2 - y1), 10), min(0.1 * (x2 - x1), 10)
        nx1, nx2, ny1, ny2 = int(x1 - sw), int(x2 + sw), int(y1 - sh), int(y2 + sh)
        left = 0 < nx1 < x1 and similar[y1:y2, nx1:x1].mean() > threshold
        right = x2 < nx2 < width and similar[y1:y2, x2:nx2].mean() > threshold
        top = 0 < ny1 < y1 and similar[ny1:y1, x1:x2].mean() > threshold
        bottom = y2 < ny2 < height and similar[y2:ny2, x1:x2].mean() > threshold
        if not (left or right or top or bottom):
            break
        box = (nx1 if left else x1, ny1 if top else y1, nx2 if right else x2, ny2 if bottom else y2)
        expanded = True
    return box, expanded


def gaussian(mask: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-(dt - max dt)^2 / max(|M| / gamma, 1)) inside the mask, 0 outside (float32)."""
    distances = ndi.distance_transform_edt(mask).astype(np.float32)
    values = np.exp(-((distances - distances.max()) ** 2) / max(mask.sum() / gamma, 1))
    return np.where(mask, values, 0).astype(np.float32)


def to_mask_grid(planes: np.ndarray, fill: float, input_size: tuple[int, int], geometry) -> torch.Tensor:
    """(N, h, w) original-size planes -> input size (bilinear) -> padded with `fill` to the input
    frame -> the mask-prompt grid (bilinear): (N, 1, M, M)."""
    frame, side = geometry.image_size, geometry.mask_input_size
    resized = F.interpolate(torch.from_numpy(planes).float()[:, None], input_size, mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, frame - input_size[1], 0, frame - input_size[0]), value=fill)
    return F.interpolate(padded, (side, side), mode="bilinear", align_corners=False)


def mask_prompts(masks, expanded, input_size, geometry, gamma: float = 4.0, strength: float = 30.0) -> np.ndarray:
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
    geometry=None,
    *,
    threshold: float = 0.0,
    passes: int = 1,
    gamma: float = 4.0,
    strength: float = 30.0,
) -> ReferencePrompts:
    """All prompts of N non-empty masks (distance points, negative point, CEBox when `threshold` > 0,
    mask prompt); `geometry` defaults to SAM's (1024 frame, 64 grid, 256 mask prompt)."""
    geometry = geometry if geometry is not None else _SamGeometry()
    points, labels, boxes, expanded = [], [], [], []
    for mask in masks:
        negative = negative_point(mask)
        points.append([positive_point(mask), negative if negative is not None else (0, 0)])
        labels.append([POSITIVE, NEGATIVE if negative is not None else NOT_A_POINT])
        if threshold > 0:
            box, moved = cebox(mask, similarity_map(embeddings, mask, input_size, geometry), threshold, passes)
        else:
            box, moved = tight_box(mask), False
        boxes.append(box)
        expanded.append(moved)
    expanded = np.array(expanded)
    prompts = mask_prompts(masks, expanded, input_size, geometry, gamma, strength)
    as_int = [np.array(values, np.int64) for values in (points, labels, boxes)]
    return ReferencePrompts(*as_int, expanded, prompts)


class _SamGeometry(NamedTuple):
    image_size: int = 1024
    embedding_size: int = 64
    mask_input_size: int = 256
