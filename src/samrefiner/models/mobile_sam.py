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

    patch_kernel = MOBILE_SAM_PATCH_KERNEL

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> bool:
        """True for the official layout of this family: TinyViT whose patch embedding has `patch_kernel`."""
        return is_tiny_vit_state_dict(state_dict) and patch_kernel(state_dict) == cls.patch_kernel

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device = "cpu"
    ) -> MobileSamBackend:
        """A backend of this family from an official-layout state dict (float32 tensors)."""
        return cls(build_tiny_vit_sam(state_dict, source), source, device)

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.vision_encoder(pixels), {}
