"""SAM 2.1 backend: transformers' `Sam2Model` (image mode) behind the `PromptableModel` interface.

As in the official SAM 2 image predictor: the image is resized to image_size x image_size (1024)
without keeping the aspect ratio (so the input frame is all image), normalised with ImageNet
statistics, and the mask_input_size (256) logits are resized straight to the original size. The
decoder also uses the encoder's two high-resolution feature maps, kept in `Encoding.features`.
The geometry is read from the prompt encoder (SAM 3's tracker and EdgeTAM subclass this backend).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2Model

from samrefiner.models.base import Encoding
from samrefiner.models.convert_sam2 import build_sam2_model, is_sam2_state_dict
from samrefiner.models.sam import SamBackend, check_image, normalized_pixels

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


class Sam2Backend(SamBackend):
    """SAM 2.1 (Hiera encoder, decoder with high-resolution skip features) for single images."""

    kind = "sam2"
    model_class = Sam2Model
    pixel_mean = IMAGENET_MEAN
    pixel_std = IMAGENET_STD

    def _read_geometry(self) -> None:
        """The input frame from the prompt encoder's config; the embedding and mask-prompt grids as
        its prompt encoder computes them."""
        encoder = self.model.prompt_encoder
        self.image_size = int(self.model.config.prompt_encoder_config.image_size)
        self.embedding_size = int(encoder.image_embedding_size[0])
        self.mask_input_size = int(encoder.mask_input_size[0])

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        """The (1, 3, image_size, image_size) normalised input (PIL bilinear resize to the whole frame)."""
        input_size = (self.image_size, self.image_size)
        return normalized_pixels(image, input_size, self.pixel_mean, self.pixel_std, self.image_size)

    def encode(self, image: np.ndarray) -> Encoding:
        check_image(image)
        original = (int(image.shape[0]), int(image.shape[1]))
        input_size = (self.image_size, self.image_size)
        pixels = self._pixels(image)
        with torch.inference_mode(), self._autocast():
            *high_res, lowest = self.model.get_image_embeddings(pixels.to(self.device))
        features = {f"high_res_{level}": feature.float() for level, feature in enumerate(high_res)}
        return Encoding(embeddings=lowest.float(), original_size=original, input_size=input_size, features=features)

    def _decoder_inputs(self, encoding: Encoding) -> dict[str, object]:
        """SAM 2.1's decoder also reads the encoder's two high-resolution feature maps."""
        return {"high_resolution_features": [encoding.features[f"high_res_{level}"].to(self.device) for level in range(2)]}

    def upscale(self, low_res_logits: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """Low-res logits straight to the original size (bilinear, align_corners=False)."""
        with torch.inference_mode():
            return F.interpolate(
                low_res_logits.float(), size=encoding.original_size, mode="bilinear", align_corners=False
            )


Backend = Sam2Backend


def matches_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an official SAM 2 / 2.1 key layout (sam2.1_hiera_*.pt)."""
    return is_sam2_state_dict(state_dict)


def from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device) -> Sam2Backend:
    """A SAM 2.1 backend from an official checkpoint's state dict (variant read from the shapes)."""
    return Sam2Backend(build_sam2_model(state_dict, source), source, device)
