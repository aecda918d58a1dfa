"""SAM 3 backend: transformers' `Sam3TrackerModel` (SAM 3's promptable tracker, image mode).

Preprocessing is transformers' `Sam3TrackerProcessor` (its `Sam3ImageProcessor`): the image is
resized to image_size x image_size (1008) without keeping the aspect ratio, bilinear with
antialiasing as torchvision does it, normalised with mean = std = 0.5; the embedding grid is the
1008 / 14 = 72 patch grid, and mask prompts and low-res logits are 4 x 72 = 288 squares (all read
from the model's config). Prompts and decoding are SAM 2.1's (`Sam2Backend`); the logits are resized
straight to the original size, as the processor's `post_process_masks` does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam3TrackerModel

from samrefiner.models.sam2 import Sam2Backend

HALF = np.array([0.5, 0.5, 0.5], dtype=np.float32) * 255


def processor_pixels(image: np.ndarray, side: int, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(1, 3, side, side) float32 as transformers' torchvision image processors make them: bilinear
    antialiased resize of the uint8 image (on the uint8 values where the CPU has AVX2, as torchvision
    chooses, else in float32 and rounded), then (x - 255 mean) / (255 std)."""
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None]
    native_uint8 = "AVX2" in torch.backends.cpu.get_cpu_capability()
    resized = F.interpolate(
        pixels if native_uint8 else pixels.float(), (side, side), mode="bilinear", antialias=True, align_corners=False
    )
    if not native_uint8:
        resized = resized.round().to(torch.uint8)
    mean_t, std_t = (torch.from_numpy(values)[:, None, None] for values in (mean, std))
    return ((resized.float() - mean_t) / std_t).contiguous()


class WholeFrameBackend(Sam2Backend):
    """A SAM 2 style backend whose processor resizes the whole image to the square input frame
    (`processor_pixels`) with its own normalisation (`pixel_mean`, `pixel_std`, 0-255 scale)."""

    pixel_mean: np.ndarray
    pixel_std: np.ndarray

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        return processor_pixels(image, self.image_size, self.pixel_mean, self.pixel_std)


class Sam3Backend(WholeFrameBackend):
    """SAM 3's tracker (ViT + FPN encoder, SAM 2 style prompt encoder and mask decoder)."""

    kind = "sam3"
    model_class = Sam3TrackerModel
    pixel_mean = HALF
    pixel_std = HALF

Backend = Sam3Backend
