"""Independent references for the SAM 2 family's image transforms and hole filling, written from the
official code's description (facebookresearch/sam2 and sam3: `SAM2Transforms`), not from ours:

- `antialiased_resize`: torchvision's `Resize` on a float tensor (bilinear, antialias=True), i.e. the
  separable triangle filter whose support grows with the downscaling factor (PIL's resampling), as
  explicit (out x in) weight matrices in float64;
- `filled_holes`: `postprocess_masks`' hole filling with a breadth-first search over 8-neighbours.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def triangle_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of the antialiased bilinear resize along one axis."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # the triangle widens when downscaling
    centers = (np.arange(out_size) + 0.5) * scale
    sources = np.arange(in_size) + 0.5
    weights = np.clip(1.0 - np.abs(sources[None, :] - centers[:, None]) / support, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def antialiased_resize(image: np.ndarray, side: int, mean, std) -> np.ndarray:
    """(1, 3, side, side): image / 255 resized to side x side with the triangle filter, then (x - mean) / std."""
    height, width = image.shape[:2]
    rows, cols = triangle_weights(height, side), triangle_weights(width, side)
    unit = image.astype(np.float64) / 255
    resized = np.stack([rows @ unit[..., channel] @ cols.T for channel in range(3)])
    return ((resized - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None])[None]


def filled_holes(logits: np.ndarray, max_area: float) -> np.ndarray:
    """One (H, W) logit map with every 8-connected background component (logit <= 0) of at most
    `max_area` pixels set to 10.0."""
    background = logits <= 0
    seen = np.zeros_like(background)
    out = logits.copy()
    height, width = background.shape
    for start in zip(*np.nonzero(background)):
        if seen[start]:
            continue
        component, queue = [], deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            component.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and background[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        if len(component) <= max_area:
            for pixel in component:
                out[pixel] = 10.0
    return out
