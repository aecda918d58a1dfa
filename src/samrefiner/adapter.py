"""The SAMRefiner++ IoU adapter: a LoRA on the last linear layer of a model's IoU head.

The adapter adds `scale * B @ A @ h` to that layer's output (`h` its input, scale = alpha / rank)
through a forward hook, so the frozen base weights are never touched and the candidate masks
cannot change: only the predicted IoU scores (and so the choice among candidates) do.
Files are .safetensors holding `lora_A` (rank x in) and `lora_B` (out x rank) plus metadata that
ties the adapter to its base model (a fingerprint of the IoU head's weights).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from samrefiner.errors import CheckpointError
from samrefiner.io.images import atomic_write
from samrefiner.models.base import PromptableModel

FORMAT = "samrefiner-iou-adapter"
FORMAT_VERSION = "1"


def last_linear(head: torch.nn.Module) -> tuple[str, torch.nn.Linear]:
    """The IoU head's output layer: `proj_out` (transformers MLPs) or else its last nn.Linear."""
    linears = [(name, module) for name, module in head.named_modules() if isinstance(module, torch.nn.Linear)]
    named = dict(linears)
    if "proj_out" in named:
        return "proj_out", named["proj_out"]
    if not linears:
        raise CheckpointError(f"the model's IoU head ({type(head).__name__}) has no linear layer to adapt")
    return linears[-1]


def model_fingerprint(model: PromptableModel) -> str:
    """A short hash of the IoU head's weights (float32, by name): the base-model identity of an adapter."""
    digest = hashlib.sha256(model.kind.encode())
    for name, tensor in sorted(model.iou_head.state_dict().items()):
        values = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(values.shape)};".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


class IoUAdapter(torch.nn.Module):
    """LoRA weights for one base model's IoU head output layer, with what identifies that model."""

    def __init__(
        self,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        alpha: float,
        layer: str,
        base_fingerprint: str,
        base_name: str,
        base_kind: str,
        source: str = "adapter",
    ) -> None:
        super().__init__()
        self.lora_a = torch.nn.Parameter(lora_a.detach().to(torch.float32).clone())
        self.lora_b = torch.nn.Parameter(lora_b.detach().to(torch.float32).clone())
        self.alpha = float(alpha)
        self.layer = layer
        self.base_fingerprint = base_fingerprint
        self.base_name = base_name
        self.base_kind = base_kind
        self.source = source  # the file it came from, for messages

    @property
    def rank(self) -> int:
        return self.lora_a.shape[0]

    @classmethod
    def create(cls, model: PromptableModel, rank: int = 4, alpha: float = 4.0, seed: int = 0) -> IoUAdapter:
        """A fresh adapter for `model` that changes nothing yet (B = 0; A as nn.Linear initialises)."""
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        layer, linear = last_linear(model.iou_head)
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(linear.in_features)  # kaiming_uniform(a=sqrt(5)), as nn.Linear and LoRA use
        lora_a = (torch.rand(rank, linear.in_features, generator=generator) * 2 - 1) * bound
        lora_b = torch.zeros(linear.out_features, rank)
        adapter = cls(lora_a, lora_b, alpha, layer, model_fingerprint(model), model.name, model.kind)
        return adapter.to(model.device)

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the adapter adds to the adapted layer's output for its input `hidden`."""
        hidden = hidden.to(self.lora_a.dtype)
        return (self.alpha / self.rank) * (hidden @ self.lora_a.T) @ self.lora_b.T

    def check_base(self, model: PromptableModel) -> None:
        """Refuse a model other than the one this adapter was trained on."""
        fingerprint = model_fingerprint(model)
        if fingerprint != self.base_fingerprint:
            raise CheckpointError(
                f"{self.source}: IoU adapter was trained for base model {self.base_name} "
                f"({self.base_kind}, fingerprint {self.base_fingerprint}), not for {model.name} "
                f"({model.kind}, fingerprint {fingerprint})"
            )

    @contextmanager
    def applied(self, model: PromptableModel) -> Iterator[None]:
        """Within the block, `model`'s IoU head scores candidates with this adapter."""
        self.check_base(model)
        linear = dict(model.iou_head.named_modules())[self.layer]

        def add_delta(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            return output + self.delta(inputs[0]).to(output.dtype)

        handle = linear.register_forward_hook(add_delta)
        try:
            yield
        finally:
            handle.remove()

    def save(self, path: str | Path) -> None:
        """Write the adapter and its metadata to a .safetensors file (atomically)."""
        tensors = {"lora_A": self.lora_a.detach().cpu().contiguous(), "lora_B": self.lora_b.detach().cpu().contiguous()}
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "rank": str(self.rank),
            "alpha": repr(self.alpha),
            "layer": self.layer,
            "base_fingerprint": self.base_fingerprint,
            "base_name": self.base_name,
            "base_kind": self.base_kind,
        }
        data = save_safetensors(tensors, metadata)
        atomic_write(path, lambda handle: handle.write(data))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> IoUAdapter:
        """Read an adapter file; any problem becomes one CheckpointError line naming the file."""
        try:
            tensors, metadata = read_safetensors(path)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: IoU adapter file not found") from None
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"{path}: not a readable .safetensors IoU adapter ({error})") from None
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a samrefiner IoU adapter (no '{FORMAT}' format tag)")
        if metadata.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: IoU adapter format version {metadata.get('format_version')!r} is not supported "
                f"(this samrefiner reads version {FORMAT_VERSION})"
            )
        try:
            adapter = cls(
                tensors["lora_A"],
                tensors["lora_B"],
                float(metadata["alpha"]),
                metadata["layer"],
                metadata["base_fingerprint"],
                metadata["base_name"],
                metadata["base_kind"],
                source=str(path),
            )
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{path}: IoU adapter is missing or has a bad entry {error}") from None
        if adapter.lora_a.ndim != 2 or adapter.lora_b.ndim != 2 or adapter.lora_b.shape[1] != adapter.rank:
            raise CheckpointError(
                f"{path}: IoU adapter has inconsistent shapes lora_A {tuple(adapter.lora_a.shape)}, "
                f"lora_B {tuple(adapter.lora_b.shape)}"
            )
        if str(adapter.rank) != metadata.get("rank"):
            raise CheckpointError(
                f"{path}: IoU adapter rank {metadata.get('rank')} does not match lora_A's {adapter.rank}"
            )
        return adapter.to(device)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (on the CPU) and the metadata of a .safetensors file."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}


def resolve_adapter(adapter: str | Path | IoUAdapter | None, model: PromptableModel) -> IoUAdapter | None:
    """An adapter object from a path or an object, checked against `model` (None stays None)."""
    if adapter is None:
        return None
    if not isinstance(adapter, IoUAdapter):
        adapter = IoUAdapter.load(adapter, device=model.device)
    adapter.check_base(model)
    return adapter.to(model.device)


def adapted(adapter: IoUAdapter | None, model: PromptableModel) -> AbstractContextManager[None]:
    """`adapter.applied(model)`, or a context that does nothing when there is no adapter."""
    return nullcontext() if adapter is None else adapter.applied(model)
