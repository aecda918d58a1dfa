"""Image embeddings kept on disk: one .safetensors file per (image content, model) pair.

The file name is a hash of the image's pixels plus a key of the model (its weights' identity, the
precision it computes in, the kind of device), so a changed image, a different model, or the same
model in another precision or on another kind of device never reuses a stale entry; a damaged
entry is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save as save_safetensors

from samrefiner.adapter import model_fingerprint, read_safetensors
from samrefiner.io.images import atomic_write
from samrefiner.models.base import Encoding, PromptableModel

_FEATURE_PREFIX = "features."


def image_hash(image: np.ndarray) -> str:
    """A short hash of an image's shape and pixels."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:20]


PREPROCESSING = 2  # bumped when a backend reads images differently (2: SAM 2.1/SAM 3/EdgeTAM float resize)


def model_key(model: PromptableModel) -> str:
    """What distinguishes one model's embeddings from another's: its source and IoU-head fingerprint,
    the precision it computes in and the kind of device it runs on (CPU fp32 and GPU bf16 embeddings
    of one image differ; GPUs of one kind give the same)."""
    precision = str(getattr(model, "autocast_dtype", None) or torch.float32).removeprefix("torch.")
    device = torch.device(model.device).type
    source = f"{model.kind}:{model.name}:{model.image_size}:{precision}:{device}:{PREPROCESSING}"
    return f"{model_fingerprint(model)}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Encode images with `model`, reusing embeddings stored in `folder` (None: no disk cache)."""

    def __init__(self, model: PromptableModel, folder: str | Path | None) -> None:
        self.model = model
        self.folder = None if folder is None else Path(folder)
        self._key = model_key(model)

    def encode(self, image: np.ndarray) -> Encoding:
        if self.folder is None:
            return self.model.encode(image)
        path = self.folder / f"{image_hash(image)}-{self._key}.safetensors"
        cached = _read(path, self.model)
        if cached is not None:
            return cached
        encoding = self.model.encode(image)
        _write(path, encoding)
        return encoding


def _write(path: Path, encoding: Encoding) -> None:
    tensors = {"embeddings": encoding.embeddings.detach().cpu().contiguous()}
    tensors.update({_FEATURE_PREFIX + k: v.detach().cpu().contiguous() for k, v in encoding.features.items()})
    metadata = {
        "original_size": ",".join(map(str, encoding.original_size)),
        "input_size": ",".join(map(str, encoding.input_size)),
    }
    data = save_safetensors(tensors, metadata)
    atomic_write(path, lambda handle: handle.write(data))


def _read(path: Path, model: PromptableModel) -> Encoding | None:
    """The cached encoding, or None when the entry is missing or unreadable."""
    try:
        tensors, header = read_safetensors(path)
        original_size = _size(header["original_size"])
        input_size = _size(header["input_size"])
        embeddings = tensors.pop("embeddings")
    except (OSError, SafetensorError, ValueError, KeyError):
        return None
    features = {k[len(_FEATURE_PREFIX) :]: v.to(model.device) for k, v in tensors.items()}
    return Encoding(embeddings.to(model.device), original_size, input_size, features)


def _size(text: str) -> tuple[int, int]:
    height, width = (int(part) for part in text.split(","))
    return height, width
