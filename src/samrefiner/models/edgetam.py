"""EdgeTAM backend: transformers' `EdgeTamModel` (RepViT encoder through timm, SAM 2's prompt
encoder and mask decoder), image mode.

Pre- and postprocessing are the official EdgeTAM predictor's, i.e. SAM 2's transforms
(facebookresearch/EdgeTAM): the image as a float tensor in [0, 1], resized to image_size x
image_size (1024) without keeping the aspect ratio, bilinear with antialiasing, ImageNet mean and
std, no hole filling; 64 x 64 embedding, 256 x 256 mask prompts and logits (read from the config),
logits resized straight to the original size. The encoder needs `timm` (the tests use a random
stand-in backbone registered with transformers: timm needs torchvision).
"""

from __future__ import annotations

from transformers import EdgeTamModel

from samrefiner.models.sam2 import WholeFrameBackend


class EdgeTamBackend(WholeFrameBackend):
    """EdgeTAM for single images: SAM 2.1's prompts and decoding on EdgeTAM's encoder."""

    kind = "edgetam"
    model_class = EdgeTamModel
