"""SAM 2.1 backend: transformers' `Sam2Model` (image mode) behind the `PromptableModel` interface.

`WholeFrameBackend` reads images as the official SAM 2 image predictor (`SAM2Transforms`) does, and
SAM 3's tracker and EdgeTAM inherit it: the uint8 image becomes a float tensor in [0, 1], is resized
to image_size x image_size without keeping the aspect ratio (so the input frame is all image),
bilinear with antialiasing (torchvision's `Resize` on tensors: `F.interpolate(..., antialias=True)`),
and normalised with the family's mean and std (ImageNet's for SAM 2.1). The decoder also uses the
encoder's two high-resolution feature maps, kept in `Encoding.features`. The low-res logits
(mask_input_size, 256) go straight to the original size; before that, a backend with
`max_hole_area` > 0 fills the small holes of each low-res mask as the official predictors do
(`samrefiner.models.holes`). The geometry is read from the prompt encoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2Model

from samrefiner.models.base import Encoding
from samrefiner.models.convert_sam2 import build_sam2_model, is_sam2_state_dict
from samrefiner.models.holes import fill_holes
from samrefiner.models.transformers_backend import TransformersBackend

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def whole_frame_pixels(image: np.ndarray, side: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(1, 3, side, side) float32 as the official SAM 2 / SAM 3 transforms make them: ToTensor (x / 255),
    Resize((side, side)) on the tensor (bilinear, antialias, align_corners=False), Normalize(mean, std)."""
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float().div(255)
    resized = F.interpolate(pixels, (side, side), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((resized - mean_t) / std_t).contiguous()


class WholeFrameBackend(TransformersBackend):
    """A SAM 2 style model for single images (SAM 2.1, SAM 3's tracker, EdgeTAM): the whole image
    resized to the square input frame (`whole_frame_pixels` with `pixel_mean`, `pixel_std` on the
    [0, 1] scale), high-resolution decoder features, small holes filled up to `max_hole_area` pixels
    of the low-res mask (0: none; set it on a loaded model to change it)."""

    pixel_mean: tuple[float, ...] = IMAGENET_MEAN
    pixel_std: tuple[float, ...] = IMAGENET_STD
    max_hole_area: float = 0.0

    def _read_geometry(self) -> None:
        """The input frame from the prompt encoder's config; the embedding and mask-prompt grids as
        its prompt encoder computes them."""
        encoder = self.model.prompt_encoder
        self.image_size = int(self.model.config.prompt_encoder_config.image_size)
        self.embedding_size = int(encoder.image_embedding_size[0])
        self.mask_input_size = int(encoder.mask_input_size[0])

    def _input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return self.image_size, self.image_size

    def _pixels(self, image: np.ndarray, input_size: tuple[int, int]) -> torch.Tensor:
        return whole_frame_pixels(image, self.image_size, self.pixel_mean, self.pixel_std)

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The lowest-resolution embedding; the two high-resolution maps as features."""
        *high_res, lowest = self.model.get_image_embeddings(pixels)
        return lowest, {f"high_res_{level}": feature for level, feature in enumerate(high_res)}

    def _decoder_inputs(self, encoding: Encoding) -> dict[str, object]:
        """The decoder also reads the encoder's two high-resolution feature maps."""
        return {
            "high_resolution_features": [encoding.features[f"high_res_{level}"].to(self.device) for level in range(2)]
        }

    def upscale(self, low_res_logits: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """Small holes filled (when `max_hole_area` > 0), then the low-res logits straight to the
        original size (bilinear, align_corners=False): the official `postprocess_masks`."""
        with torch.inference_mode():
            logits = low_res_logits.float()
            if self.max_hole_area > 0:
                logits = fill_holes(logits, self.max_hole_area)
            return F.interpolate(logits, size=encoding.original_size, mode="bilinear", align_corners=False)


class Sam2Backend(WholeFrameBackend):
    """SAM 2.1 (Hiera encoder, decoder with high-resolution skip features) for single images; no hole
    filling, as the official `SAM2ImagePredictor`'s default."""

    kind = "sam2"
    model_class = Sam2Model

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> bool:
        """True for an official SAM 2 / 2.1 key layout (sam2.1_hiera_*.pt)."""
        return is_sam2_state_dict(state_dict)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device = "cpu"
    ) -> Sam2Backend:
        """A SAM 2.1 backend from an official checkpoint's state dict (variant read from the shapes)."""
        return cls(build_sam2_model(state_dict, source), source, device)
