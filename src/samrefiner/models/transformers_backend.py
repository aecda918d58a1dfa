"""`TransformersBackend`: a transformers SAM-family model behind `PromptableModel`, written once.

`encode` checks the image, resizes and normalises it (`_input_size`, `_pixels`) and runs the image
encoder (`_embed`); `decode` checks the prompts, maps them to the input frame (`_to_input_frame`) and
runs the prompt encoder and mask decoder in chunks of objects (`_decode_chunk`, `_decoder_inputs`).
A backend family overrides those hooks and `upscale`; the model's geometry is read from its config
(`_read_geometry`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
import torch
from transformers import PreTrainedModel

from samrefiner.errors import InputError
from samrefiner.models.base import Decoded, Encoding, PromptableModel
from samrefiner.models.speed import autocast_dtype, decode_batch


def check_image(image: np.ndarray) -> None:
    """Raise InputError unless `image` is an H x W x 3 uint8 array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image must be an H x W x 3 uint8 RGB array, got shape {shape} dtype {dtype}")


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


class TransformersBackend(PromptableModel):
    """The shared body of the backends on transformers models (SAM, HQ-SAM, SAM 2.1, SAM 3, ...)."""

    model_class: ClassVar[type[PreTrainedModel]]  # the transformers class a folder or HF id loads into
    multimask_output = True  # False: decode with the single-mask token (one candidate per object)

    def __init__(self, model: PreTrainedModel, name: str, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.autocast_dtype = autocast_dtype("auto", self.device)
        self._read_geometry()
        with torch.inference_mode():
            self._image_pe = self.model.get_image_wide_positional_embeddings()

    def _read_geometry(self) -> None:
        """`image_size`, `embedding_size` and `mask_input_size` as the model's config states them."""
        config = self.model.config.prompt_encoder_config
        self.image_size = int(config.image_size)
        self.embedding_size = int(config.image_embedding_size)
        self.mask_input_size = 4 * self.embedding_size  # the mask embedding's two stride-2 convolutions

    def compile_targets(self) -> list[tuple[torch.nn.Module, bool]]:
        return [(self.model.vision_encoder, False), (self.model.mask_decoder, True)]

    @property
    def iou_head(self) -> torch.nn.Module:
        return self.model.mask_decoder.iou_prediction_head

    def encode(self, image: np.ndarray) -> Encoding:
        check_image(image)
        original = (int(image.shape[0]), int(image.shape[1]))
        input_size = self._input_size(original)
        pixels = self._pixels(image, input_size)
        with torch.inference_mode(), self.autocast():
            embeddings, features = self._embed(pixels.to(self.device))
        features = {key: value.float() for key, value in features.items()}
        return Encoding(embeddings=embeddings.float(), original_size=original, input_size=input_size, features=features)

    @abstractmethod
    def _input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the resized image in the input frame."""

    @abstractmethod
    def _pixels(self, image: np.ndarray, input_size: tuple[int, int]) -> torch.Tensor:
        """The (1, 3, image_size, image_size) normalised input of the image encoder."""

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
            raise ValueError(
                f"mask_inputs must be (N, 1, {side}, {side}) for this model, got {tuple(mask_inputs.shape)}"
            )
        points, boxes = self._to_input_frame(points, boxes, encoding)
        point_t = None if points is None else torch.as_tensor(points, dtype=torch.float32, device=self.device)
        label_t = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=self.device)
        box_t = None if boxes is None else torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        mask_t = None if mask_inputs is None else mask_inputs.to(self.device, torch.float32)
        logits, scores = [], []
        step = decode_batch(self.device, chunk_size, self.cpu_decode_batch)
        with torch.inference_mode(), self.autocast():
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
