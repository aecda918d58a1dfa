"""The option values of the public API as `Literal` types (torch-free), so that type checkers
flag a misspelt option: `RefinerConfig(point_strategy="nope")` is an error under mypy.

Each alias has a tuple of its values beside it, read from the alias itself, for the run-time
checks and the CLI's messages.
"""

from __future__ import annotations

from typing import Literal, get_args

PointStrategy = Literal["distance", "box_center", "random"]
"""How the positive point is placed: the mask's innermost pixel, its box's centre, or a random pixel."""

Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Autocast precision of the model calls ("auto": bf16 on CUDA, fp32 elsewhere)."""

AdaptPrompt = Literal["box", "point", "box+point"]
"""The prompt SAMRefiner++ adaption decodes each coarse mask with."""

POINT_STRATEGIES: tuple[PointStrategy, ...] = get_args(PointStrategy)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
ADAPT_PROMPTS: tuple[AdaptPrompt, ...] = get_args(AdaptPrompt)
