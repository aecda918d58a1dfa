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

from samrefiner.errors import InputError
from samrefiner.models.base import Decoded, Encoding, PromptableModel
from samrefiner.models.convert_sam import build_sam_model, is_sam_state_dict
from samrefiner.models.fused_decoder import FusedSamDecoder
from samrefiner.models.speed import CPU_DECODE_BATCH, autocast, autocast_dtype, decode_batch
from samrefiner.types import Precision

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def check_image(image: np.ndarray) -> None:
    """Raise InputError unless `image` is an H x W x 3 uint8 array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image must be an H x W x 3 uint8 RGB array, got shape {shape} dtype {dtype}")


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


def prompts_to_input_frame(
    points: np.ndarray | None, boxes: np.ndarray | None, encoding: Encoding
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Scale (x, y) points (N, K, 2) and boxes (N, 4) from the original to the input frame."""
    (old_h, old_w), (new_h, new_w) = encoding.original_size, encoding.input_size
    scale = np.array([new_w / old_w, new_h / old_h])
    scaled_points = None if points is None else np.asarray(points, dtype=np.float64) * scale
    scaled_boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64) * np.tile(scale, 2)
    return scaled_points, scaled_boxes


def count_objects(
    points: np.ndarray | None, labels: np.ndarray | None, boxes: np.ndarray | None, mask_inputs: torch.Tensor | None
) -> int:
    """Number of objects N, checking that the given prompts agree on it and on their shapes."""
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together")
    counts = set()
    if points is not None:
        points, labels = np.asarray(points), np.asarray(labels)
        if points.ndim != 3 or points.shape[2] != 2 or labels.shape != points.shape[:2]:
            raise ValueError(f"points must be (N, K, 2) and labels (N, K), got {points.shape} and {labels.shape}")
        counts.add(points.shape[0])
    if boxes is not None:
        if np.ndim(boxes) != 2 or np.shape(boxes)[1] != 4:
            raise ValueError(f"boxes must be (N, 4), got {np.shape(boxes)}")
        counts.add(len(boxes))
    if mask_inputs is not None:
        if mask_inputs.ndim != 4 or mask_inputs.shape[1] != 1:
            raise ValueError(f"mask_inputs must be (N, 1, M, M), got {tuple(mask_inputs.shape)}")
        counts.add(mask_inputs.shape[0])
    if len(counts) != 1:
        raise ValueError(f"prompts must be given for the same objects, got counts {sorted(counts) or 'none'}")
    return counts.pop()


class SamBackend(PromptableModel):
    """Segment Anything (ViT-B/L/H or a reduced encoder) on transformers' `SamModel`."""

    kind = "sam"
    model_class = SamModel
    pixel_mean = PIXEL_MEAN
    pixel_std = PIXEL_STD
    multimask_output = True  # False: decode with the single-mask token (one candidate per object)

    def __init__(self, model: SamModel, name: str, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self._read_geometry()
        with torch.inference_mode():
            self._image_pe = self.model.get_image_wide_positional_embeddings()
        plain_sam = type(self.model.mask_decoder) is SamMaskDecoder
        fusable = plain_sam and self.multimask_output
        self._fused = FusedSamDecoder(self.model, self._image_pe) if fusable else None
        self.autocast_dtype = autocast_dtype("auto", self.device)
        self.cpu_decode_batch = CPU_DECODE_BATCH

    def _read_geometry(self) -> None:
        """`image_size`, `embedding_size` and `mask_input_size` as the model's config states them."""
        config = self.model.config.prompt_encoder_config
        self.image_size = int(config.image_size)
        self.embedding_size = int(config.image_embedding_size)
        self.mask_input_size = 4 * self.embedding_size  # the mask embedding's two stride-2 convolutions

    def speed_up(self, precision: Precision = "auto", compile: bool = False) -> None:
        """Autocast precision of the model calls ("auto": bf16 on CUDA, fp32 elsewhere; see
        `samrefiner.models.speed`) and, with `compile`, torch.compile of the image encoder and the
        decoder (the first calls then take a while)."""
        self.autocast_dtype = autocast_dtype(precision, self.device)
        if compile:
            self.model.vision_encoder.compile(dynamic=False)
            (self._fused if self._fused is not None else self.model.mask_decoder).compile(dynamic=True)

    def _autocast(self):
        return autocast(self.device, self.autocast_dtype)

    @property
    def iou_head(self) -> torch.nn.Module:
        return self.model.mask_decoder.iou_prediction_head

    def encode(self, image: np.ndarray) -> Encoding:
        check_image(image)
        original = (int(image.shape[0]), int(image.shape[1]))
        input_size = resized_size(*original, self.image_size)
        pixels = normalized_pixels(image, input_size, self.pixel_mean, self.pixel_std, self.image_size)
        with torch.inference_mode(), self._autocast():
            embeddings, features = self._embed(pixels.to(self.device))
        return Encoding(embeddings=embeddings.float(), original_size=original, input_size=input_size, features=features)

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The image embedding (1, C, E, E) and the backend's extra features for `Encoding.features`."""
        return self.model.get_image_embeddings(pixels), {}

    def _decoder_inputs(self, encoding: Encoding) -> dict[str, object]:
        """Extra keyword arguments of the backend's mask decoder (from `Encoding.features`)."""
        return {}

    def decode(
        self,
        encoding: Encoding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_inputs: torch.Tensor | None,
        chunk_size: int = 64,
    ) -> Decoded:
        count = count_objects(points, labels, boxes, mask_inputs)
        side = self.mask_input_size
        if mask_inputs is not None and tuple(mask_inputs.shape[-2:]) != (side, side):
            raise ValueError(f"mask_inputs must be (N, 1, {side}, {side}) for this model, got {tuple(mask_inputs.shape)}")
        points, boxes = self._to_input_frame(points, boxes, encoding)
        point_t = None if points is None else torch.as_tensor(points, dtype=torch.float32, device=self.device)
        label_t = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=self.device)
        box_t = None if boxes is None else torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        mask_t = None if mask_inputs is None else mask_inputs.to(self.device, torch.float32)
        logits, scores = [], []
        step = decode_batch(self.device, chunk_size, self.cpu_decode_batch)
        with torch.inference_mode(), self._autocast():
            for start in range(0, count, step):
                part = slice(start, start + step)
                chunk_logits, chunk_scores = self._decode_chunk(
                    encoding,
                    None if point_t is None else point_t[part, None],
                    None if label_t is None else label_t[part, None],
                    None if box_t is None else box_t[part, None],
                    None if mask_t is None else mask_t[part],
                )
                logits.append(chunk_logits)
                scores.append(chunk_scores)
        return Decoded(low_res_logits=torch.cat(logits).float(), iou_scores=torch.cat(scores).float())

    def _to_input_frame(
        self, points: np.ndarray | None, boxes: np.ndarray | None, encoding: Encoding
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Points and boxes from the original to the input frame, as the official predictor maps them."""
        return prompts_to_input_frame(points, boxes, encoding)

    def _decode_chunk(
        self,
        encoding: Encoding,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder call, objects in the batch dimension: (B, C, M, M) logits, (B, C) IoU (C = 3
        candidates in multimask mode, else 1)."""
        if self._fused is not None:
            return self._fused(encoding.embeddings.to(self.device), points, labels, boxes, masks)
        sparse, dense = self.model.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=boxes, input_masks=masks
        )
        batch = dense.shape[0]
        if sparse is None:  # mask prompt alone: no sparse tokens, as in the official predictors
            sparse = dense.new_zeros(batch, 1, 0, dense.shape[1])
        embeddings = encoding.embeddings.to(self.device).expand(batch, -1, -1, -1)
        logits, scores = self.model.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=self._image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
            **self._decoder_inputs(encoding),
        )[:2]
        return logits[:, 0], scores[:, 0]

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


Backend = SamBackend


def matches_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an official SAM key layout (HQ-SAM's extends it, so check that family first)."""
    return is_sam_state_dict(state_dict)


def from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device) -> SamBackend:
    """A SAM backend from an official-layout state dict (float32 tensors)."""
    return SamBackend(build_sam_model(state_dict, source), source, device)
