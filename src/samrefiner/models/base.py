"""The interface every promptable backbone (SAM, HQ-SAM, SAM 2.1, ...) implements for the refiner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch

from samrefiner.errors import CheckpointError
from samrefiner.models.speed import CPU_DECODE_BATCH, autocast, autocast_dtype
from samrefiner.types import Precision


@dataclass(frozen=True)
class Encoding:
    """One image, encoded once and decoded many times.

    `embeddings` is the (1, C, E, E) float32 embedding the prompts attend to, E the model's
    `embedding_size` (for SAM 2.1 the lowest-resolution one); `features` holds backbone-specific
    extras (HQ-SAM's intermediate features, SAM 2.1's high-resolution maps). `input_size` is where
    the resized image lies in the padded `image_size` square frame (top-left corner).
    """

    embeddings: torch.Tensor
    original_size: tuple[int, int]  # (H, W) of the image given to `encode`
    input_size: tuple[int, int]  # (h, w) after resizing (longest side to image_size, or the whole frame)
    features: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    """Decoder output for N objects: C candidate masks each (3 for SAM in multimask mode)."""

    low_res_logits: torch.Tensor  # (N, C, M, M) float32, M the model's mask_input_size
    iou_scores: torch.Tensor  # (N, C) float32


class PromptableModel(ABC):
    """A segment-anything style model: encode an image once, decode prompts for many objects.

    Prompt conventions (all in the ORIGINAL image frame; the backend maps them to its input frame):
    points (N, K, 2) float (x, y); labels (N, K) int: 1 positive, 0 negative, -1 "not a point"
    (the embedding official SAM uses for its padding point); boxes (N, 4) float x1, y1, x2, y2;
    mask_inputs (N, 1, M, M) float32 logits in the padded input frame. Any of them may be None.

    Geometry (the prompt miner and the upscaling read it; defaults are SAM's): the longest image
    side is resized to `image_size` (or the image to the whole frame, as `Encoding.input_size`
    says) and zero-padded to an `image_size` square; the image embedding is an `embedding_size`
    grid over that frame; the dense mask prompt and the low-res logits are `mask_input_size`
    squares over it (M above).

    Speed (`speed_up`): the model calls run under autocast with `autocast_dtype` (None: float32),
    the decoder takes at most `cpu_decode_batch` objects per call on a CPU, and `compile_targets`
    lists what `speed_up(compile=True)` compiles.

    Loading (see `samrefiner.models.backends`): a backend that reads official checkpoints says so
    with `matches_state_dict` and builds itself with `from_state_dict`; by default it reads none.
    """

    kind: str  # "sam", "sam_hq", "sam2", ...
    name: str  # registry name or file it was loaded from
    device: torch.device
    image_size: int = 1024  # side of the square padded input frame
    embedding_size: int = 64  # side of the image-embedding grid
    mask_input_size: int = 256  # side of the dense mask prompt and of the low-res logits
    autocast_dtype: torch.dtype | None = None  # precision of the model calls (None: float32)
    cpu_decode_batch: int = CPU_DECODE_BATCH  # objects per decoder call on a CPU

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> bool:
        """True when `state_dict` has the key layout of the official checkpoints this backend reads."""
        return False

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device = "cpu"
    ) -> PromptableModel:
        """This backend built from an official state dict (float32 tensors) read from `source`."""
        raise CheckpointError(f"{source}: {cls.__name__} reads no official checkpoint layout")

    def speed_up(self, precision: Precision = "auto", compile: bool = False) -> None:
        """Autocast precision of the model calls ("auto": bf16 on CUDA, fp32 elsewhere; see
        `samrefiner.models.speed`) and, with `compile`, torch.compile of `compile_targets` (the
        first calls then take a while)."""
        self.autocast_dtype = autocast_dtype(precision, self.device)
        if compile:
            for module, dynamic in self.compile_targets():
                module.compile(dynamic=dynamic)

    def compile_targets(self) -> list[tuple[torch.nn.Module, bool]]:
        """(module, dynamic shapes) pairs that `speed_up(compile=True)` compiles (none by default)."""
        return []

    def autocast(self) -> AbstractContextManager:
        """The autocast context of the model calls (nothing for float32)."""
        return autocast(self.device, self.autocast_dtype)

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
        """(N, C, M, M) low-res logits -> (N, C, H, W) logits at the original size."""

    @property
    @abstractmethod
    def iou_head(self) -> torch.nn.Module:
        """The decoder's IoU prediction MLP (the target of IoU adaption)."""
