"""Hole filling in low-res masks, as the official SAM 2 / SAM 3 predictors' `postprocess_masks` does it.

A hole is an 8-connected component of the background (logit <= threshold) of at most `max_area`
pixels in one low-res mask map, wherever it lies (components touching the border count too); its
logits are set to threshold + 10, so it becomes foreground. The official code labels components
with `skimage.measure.label` on a CPU and a CUDA kernel on a GPU, both 8-connected; here OpenCV's
`connectedComponentsWithStats(connectivity=8)` labels them, on the CPU.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

HOLE_LOGIT_OFFSET = 10.0  # the official fill value: mask_threshold + 10


def hole_pixels(background: np.ndarray, max_area: float) -> np.ndarray:
    """The pixels of the 8-connected components of `background` (H x W bool) of at most `max_area` pixels."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(background.astype(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] <= max_area
    small[0] = False  # label 0: the pixels that are not background
    return small[labels]


def fill_holes(logits: torch.Tensor, max_area: float, threshold: float = 0.0) -> torch.Tensor:
    """(..., H, W) logits with every hole of each map of at most `max_area` pixels set to threshold + 10."""
    if logits.numel() == 0:
        return logits
    background = (logits <= threshold).reshape(-1, *logits.shape[-2:]).cpu().numpy()
    holes = np.stack([hole_pixels(plane, max_area) for plane in background]).reshape(logits.shape)
    return torch.where(torch.from_numpy(holes).to(logits.device), threshold + HOLE_LOGIT_OFFSET, logits)
