"""`load_model`: one entry point for official checkpoints, transformers folders, registry names and HF ids.

Which backend class serves which checkpoint is `samrefiner.models.backends`' registry (imported on
first use, so that importing this package stays light).
"""

from __future__ import annotations

import importlib
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from samrefiner.errors import CheckpointError
from samrefiner.models import hub
from samrefiner.models.base import PromptableModel
from samrefiner.models.device import check_device
from samrefiner.models.registry import REGISTRY, ModelEntry

if TYPE_CHECKING:
    from samrefiner.models.transformers_backend import TransformersBackend

__all__ = ["load_model", "read_state_dict"]

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def load_model(spec: str | os.PathLike[str] | Mapping[str, Any], device: str | torch.device = "cpu") -> PromptableModel:
    """Load a promptable model from a checkpoint file, a state dict, a folder, a registry name or an HF id.

    Raises CheckpointError (one line naming the file and the problem) when `spec` cannot be used,
    DeviceError when this machine has no such `device`.
    """
    device = check_device(device)
    if isinstance(spec, Mapping):
        return from_state_dict(spec, "state dict", device)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: folder has no config.json (not a transformers save_pretrained folder)")
        return from_pretrained(str(path), device)
    if path.is_file():
        return from_state_dict(read_state_dict(path), str(path), device)
    if text in REGISTRY:
        return _from_registry(REGISTRY[text], device)
    if _looks_like_hf_id(text):
        return from_pretrained(text, device)
    names = ", ".join(REGISTRY)
    raise CheckpointError(f"{text}: no such file or folder, and not a model name ({names}) or Hugging Face id")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)` a checkpoint, unwrapping a {'model': state_dict} wrapper."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad files: pickle, zip, EOF, runtime errors
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {_why_unreadable(path, error)}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a state dict of tensors (entry {not_tensors[0]!r} is not a tensor)")
    return dict(loaded)


def from_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device = "cpu"
) -> PromptableModel:
    """Detect the checkpoint family from its keys and build that backend (half precision -> float32)."""
    from samrefiner.models.backends import STATE_DICT_BACKENDS

    as_float = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    for backend in STATE_DICT_BACKENDS:
        if backend.matches_state_dict(as_float):
            return backend.from_state_dict(as_float, source, device)
    first = next(iter(state_dict), "nothing")
    raise CheckpointError(f"{source}: not a SAM checkpoint (unknown key layout, first key {first!r})")


def from_pretrained(source: str, device: str | torch.device = "cpu") -> PromptableModel:
    """Load a transformers folder or HF id whose config `model_type` has a backend; all weights must load.

    When the Hugging Face Hub cannot be reached, only its local cache is used, and a model missing
    there gets one line saying so (instead of minutes of retries).
    """
    from transformers import AutoConfig

    offline = None if Path(source).is_dir() else hub.hub_unreachable()
    hub_options = {"local_files_only": True} if offline else {}
    try:
        model_type = AutoConfig.from_pretrained(source, **hub_options).model_type
        backend = _pretrained_backend(source, model_type)
        model, info = backend.model_class.from_pretrained(
            source, output_loading_info=True, dtype=torch.float32, **hub_options
        )  # float32 always: transformers 5 would keep a half-precision hub file in half precision
    except (OSError, ValueError, RuntimeError) as error:
        if offline:
            raise CheckpointError(
                f"cannot download {source} (Hugging Face Hub unreachable: {offline}) and it is not in the local "
                f"cache: fetch it where you are online (`hf download {source} --local-dir DIR`) "
                "and pass DIR as the model"
            ) from None
        raise CheckpointError(f"cannot load {source}: {_first_line(error)}") from None
    problems = [f"{kind} {keys[0]}" for kind, keys in info.items() if keys and kind != "error_msgs"]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit {backend.model_class.__name__}: {'; '.join(problems)}")
    return backend(model, source, device)


def _pretrained_backend(source: str, model_type: str) -> type[TransformersBackend]:
    """The backend class registered for a transformers config's `model_type`."""
    from samrefiner.models.backends import PRETRAINED_BACKENDS

    if model_type not in PRETRAINED_BACKENDS:
        known = ", ".join(PRETRAINED_BACKENDS)
        raise CheckpointError(f"{source}: model type {model_type!r} is not supported (known: {known})")
    return PRETRAINED_BACKENDS[model_type]


def _from_registry(entry: ModelEntry, device: str | torch.device) -> PromptableModel:
    if entry.installed_with is not None:
        path = importlib.import_module(entry.installed_with).weights_path()
        return from_state_dict(read_state_dict(path), str(path), device)
    if entry.url is None:
        return from_pretrained(entry.hf_id, device)
    from samrefiner.models.download import fetch

    path = fetch(entry.url, entry.file_name, entry.sha256)
    return from_state_dict(read_state_dict(path), str(path), device)


def _looks_like_hf_id(text: str) -> bool:
    """ "owner/name" with no path-like parts and no checkpoint file suffix."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None and not text.lower().endswith(
        _CHECKPOINT_SUFFIXES
    )


def _why_unreadable(path: Path, error: BaseException) -> str:
    """torch.load's failure in a few words: a truncated zip archive, the unpickler's refusal, or its first sentence."""
    with open(path, "rb") as stream:
        zip_magic = stream.read(4) == b"PK\x03\x04"
    if zip_magic and not zipfile.is_zipfile(path):
        size = path.stat().st_size
        return (
            f"the file is truncated or damaged (its zip archive ends early, at {size} bytes); copy or download it again"
        )
    text = str(error)
    if "WeightsUnpickler error:" in text:  # weights_only=True met something that is not plain tensors
        detail = _first_line(text.split("WeightsUnpickler error:", 1)[1])
        return f"it holds objects other than tensors, or is damaged (torch.load with weights_only=True: {detail})"
    return _first_line(error)


def _first_line(error: BaseException | str) -> str:
    """The first line of an error message; its first sentence when that line is long (never cut mid-sentence)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    first = lines[0].strip()
    return re.split(r"(?<=[.!?])\s+", first)[0].rstrip(".") if len(first) > 200 else first
