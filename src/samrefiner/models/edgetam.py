"""EdgeTAM backend: transformers' `EdgeTamModel` (RepViT encoder through timm, SAM 2's prompt
encoder and mask decoder), image mode.

Preprocessing is transformers' `Sam2Processor` for EdgeTAM (its `Sam2ImageProcessor`): resize to
image_size x image_size (1024) without keeping the aspect ratio, bilinear with antialiasing as
torchvision does it, ImageNet normalisation; 64 x 64 embedding, 256 x 256 mask prompts and logits
(read from the config), logits resized straight to the original size. The encoder needs `timm`
(the tests use a random stand-in backbone registered with transformers: timm needs torchvision).
"""

from __future__ import annotations

from transformers import EdgeTamModel

from samrefiner.models.sam2 import IMAGENET_MEAN, IMAGENET_STD
from samrefiner.models.sam3 import WholeFrameBackend


class EdgeTamBackend(WholeFrameBackend):
    """EdgeTAM for single images: SAM 2.1's prompts and decoding on EdgeTAM's encoder."""

    kind = "edgetam"
    model_class = EdgeTamModel
    pixel_mean = IMAGENET_MEAN
    pixel_std = IMAGENET_STD


Backend = EdgeTamBackend
