"""MobileSAM backend: the TinyViT image encoder (1024 input) with SAM's prompt encoder and mask decoder.

The official MobileSAM predictor is segment-anything's, so pre- and postprocessing, prompt transforms
and multimask decoding are `SamBackend`'s; only the image embedding comes from `tiny_vit.TinyViT`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from samrefiner.models.convert_tiny_vit import build_tiny_vit_sam, is_tiny_vit_state_dict, patch_kernel
from samrefiner.models.sam import SamBackend

MOBILE_SAM_PATCH_KERNEL = 3  # two 3x3 stride-2 convolutions (LiteMedSAM's are 1x1)


class MobileSamBackend(SamBackend):
    """MobileSAM (or any official-layout TinyViT SAM with 3x3 patch embedding); three candidates per object."""

    kind = "mobile_sam"

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.vision_encoder(pixels), {}


def matches_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for the official MobileSAM layout (mobile_sam.pt: TinyViT with a 3x3 patch embedding)."""
    return is_tiny_vit_state_dict(state_dict) and patch_kernel(state_dict) == MOBILE_SAM_PATCH_KERNEL


def from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device) -> MobileSamBackend:
    """A MobileSAM backend from an official-layout state dict (float32 tensors)."""
    return MobileSamBackend(build_tiny_vit_sam(state_dict, source), source, device)
