"""SAM backend: transformers' `SamModel` behind the `PromptableModel` interface.

Pre- and postprocessing follow the official segment-anything code (SPEC section 1): PIL bilinear
resize of the longest side to `image_size` (1024), normalisation, zero padding bottom/right; logits
are upscaled mask_input_size -> image_size (256 -> 1024), cropped to the resized image and resized
to the original size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamMaskDecoder

from samrefiner.models.base import Encoding
from samrefiner.models.convert_sam import build_sam_model, is_sam_state_dict
from samrefiner.models.fused_decoder import FusedSamDecoder
from samrefiner.models.transformers_backend import TransformersBackend

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def resized_size(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) after scaling the longest side to `target`, rounded as segment-anything does."""
    scale = target * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def normalized_pixels(
    image: np.ndarray, size: tuple[int, int], mean: np.ndarray, std: np.ndarray, pad_to: int
) -> torch.Tensor:
    """PIL-bilinear resize to `size` (h, w), normalise, zero-pad bottom/right: (1, 3, pad_to, pad_to)."""
    height, width = size
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    padded = np.zeros((pad_to, pad_to, 3), dtype=np.float32)
    padded[:height, :width] = (resized.astype(np.float32) - mean) / std
    return torch.from_numpy(padded).permute(2, 0, 1).unsqueeze(0).contiguous()


class SamBackend(TransformersBackend):
    """Segment Anything (ViT-B/L/H or a reduced encoder) on transformers' `SamModel`."""

    kind = "sam"
    model_class = SamModel

    def __init__(self, model: SamModel, name: str, device: str | torch.device = "cpu") -> None:
        super().__init__(model, name, device)
        plain_sam = type(self.model.mask_decoder) is SamMaskDecoder
        fusable = plain_sam and self.multimask_output
        self._fused = FusedSamDecoder(self.model, self._image_pe) if fusable else None

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> bool:
        """True for an official SAM key layout (HQ-SAM's extends it, so check that family first)."""
        return is_sam_state_dict(state_dict)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device = "cpu"
    ) -> SamBackend:
        """A SAM backend from an official-layout state dict (float32 tensors)."""
        return cls(build_sam_model(state_dict, source), source, device)

    def compile_targets(self) -> list[tuple[torch.nn.Module, bool]]:
        decoder = self._fused if self._fused is not None else self.model.mask_decoder
        return [(self.model.vision_encoder, False), (decoder, True)]

    def _input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return resized_size(*original_size, self.image_size)

    def _pixels(self, image: np.ndarray, input_size: tuple[int, int]) -> torch.Tensor:
        return normalized_pixels(image, input_size, PIXEL_MEAN, PIXEL_STD, self.image_size)

    def _decode_chunk(
        self,
        encoding: Encoding,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused decoder where the model has SAM's plain decoder in multimask mode."""
        if self._fused is not None:
            return self._fused(encoding.embeddings.to(self.device), points, labels, boxes, masks)
        return super()._decode_chunk(encoding, points, labels, boxes, masks)

    def upscale(self, low_res_logits: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """mask_input_size -> image_size (bilinear; SAM: 256 -> 1024), crop to the input size,
        bilinear to the original size.

        Only the low-res rows/columns that reach the crop are upsampled: with the fixed whole-number
        scale (4 for SAM) this gives exactly the values of upsampling the whole map and cropping.
        """
        height, width = encoding.input_size
        factor = self.image_size // self.mask_input_size
        rows = min(low_res_logits.shape[-2], math.ceil(height / factor) + 1)
        cols = min(low_res_logits.shape[-1], math.ceil(width / factor) + 1)
        with torch.inference_mode():
            upsampled = F.interpolate(
                low_res_logits[..., :rows, :cols].float(), scale_factor=factor, mode="bilinear", align_corners=False
            )[..., :height, :width]
            return F.interpolate(upsampled, size=encoding.original_size, mode="bilinear", align_corners=False)
