"""samrefiner: turn coarse segmentation masks into accurate ones with Segment Anything."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from samrefiner.errors import CheckpointError, InputError, SamRefinerError

__version__ = "0.1.0"

# Public names -> the module that defines them; imported on first use so that `import samrefiner`
# (which every `samrefiner` command runs, the CLI being part of the package) does not import torch.
_EXPORTS = {
    "load_model": "samrefiner.models",
    "PromptableModel": "samrefiner.models.base",
    "Encoding": "samrefiner.models.base",
    "Decoded": "samrefiner.models.base",
    "Refiner": "samrefiner.refine",
    "RefinerConfig": "samrefiner.config",
    "RefineResult": "samrefiner.refine",
    "Prompts": "samrefiner.prompts",
    "split_then_merge": "samrefiner.regions",
    "IoUAdapter": "samrefiner.adapter",
    "AdaptConfig": "samrefiner.adapt",
    "collect_samples": "samrefiner.adapt",
    "train_adapter": "samrefiner.adapt",
}

# The same names for type checkers and editors (never run: the lazy imports above serve them).
if TYPE_CHECKING:
    from samrefiner.adapt import AdaptConfig, collect_samples, train_adapter
    from samrefiner.adapter import IoUAdapter
    from samrefiner.config import RefinerConfig
    from samrefiner.models import load_model
    from samrefiner.models.base import Decoded, Encoding, PromptableModel
    from samrefiner.prompts import Prompts
    from samrefiner.refine import Refiner, RefineResult
    from samrefiner.regions import split_then_merge

# A literal list, as type checkers need it to see these names as exported (`mypy --strict`).
__all__ = [
    "AdaptConfig",
    "CheckpointError",
    "Decoded",
    "Encoding",
    "InputError",
    "IoUAdapter",
    "PromptableModel",
    "Prompts",
    "RefineResult",
    "Refiner",
    "RefinerConfig",
    "SamRefinerError",
    "__version__",
    "collect_samples",
    "load_model",
    "split_then_merge",
    "train_adapter",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'samrefiner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
