"""The interface every promptable backbone (SAM, HQ-SAM, SAM 2.1) implements for the refiner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Encoding:
    """One image, encoded once and decoded many times.

    `embeddings` is the (1, 256, 64, 64) float32 embedding the prompts attend to (for SAM 2.1 the
    lowest-resolution one); `features` holds backbone-specific extras (HQ-SAM's intermediate
    features, SAM 2.1's high-resolution maps).
    """

    embeddings: torch.Tensor
    original_size: tuple[int, int]  # (H, W) of the image given to `encode`
    input_size: tuple[int, int]  # (h, w) after resizing the longest side to the model's size
    features: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    """Decoder output for N objects: C candidate masks each (3 for SAM in multimask mode)."""

    low_res_logits: torch.Tensor  # (N, C, 256, 256) float32
    iou_scores: torch.Tensor  # (N, C) float32


class PromptableModel(ABC):
    """A segment-anything style model: encode an image once, decode prompts for many objects.

    Prompt conventions (all in the ORIGINAL image frame; the backend maps them to its input frame):
    points (N, K, 2) float (x, y); labels (N, K) int: 1 positive, 0 negative, -1 "not a point"
    (the embedding official SAM uses for its padding point); boxes (N, 4) float x1, y1, x2, y2;
    mask_inputs (N, 1, 256, 256) float32 logits in the padded input frame. Any of them may be None.
    """

    kind: str  # "sam", "sam_hq" or "sam2"
    name: str  # registry name or file it was loaded from
    device: torch.device
    image_size: int = 1024
    mask_input_size: int = 256

    @abstractmethod
    def encode(self, image: np.ndarray) -> Encoding:
        """Encode an H x W x 3 uint8 RGB image."""

    @abstractmethod
    def decode(
        self,
        encoding: Encoding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_inputs: torch.Tensor | None,
        chunk_size: int = 64,
    ) -> Decoded:
        """Multimask decode for N objects, `chunk_size` objects per decoder call."""

    @abstractmethod
    def upscale(self, low_res_logits: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """(N, C, 256, 256) low-res logits -> (N, C, H, W) logits at the original size."""

    @property
    @abstractmethod
    def iou_head(self) -> torch.nn.Module:
        """The decoder's IoU prediction MLP (the target of IoU adaption)."""
