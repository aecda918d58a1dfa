"""Test-only: a transformers `Sam2Model` state dict written out in the official SAM 2.1 key layout
(the inverse of `convert_sam2`'s renaming), to make official-layout files from small random models."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from samrefiner.models.convert_sam import POSITIONAL_TARGETS
from samrefiner.models.convert_sam2 import (
    POINT_EMBED,
    POINT_EMBEDDINGS,
    POSITIONAL,
    RENAME_RULES,
    rename_with,
    rule_pattern,
)

_TO_OFFICIAL = tuple((rule_pattern(converted), official) for official, converted in RENAME_RULES)


def official_sam2_key(key: str) -> str | None:
    """The official name of one transformers key (the inverse of `rename_sam2_key`)."""
    return rename_with(key, _TO_OFFICIAL)


def to_official_state_dict(converted: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transformers `Sam2Model` state dict -> official key layout (image parts only)."""
    official: dict[str, torch.Tensor] = {}
    for key, tensor in converted.items():
        if key == POINT_EMBED:
            official.update({POINT_EMBEDDINGS.format(i=i): row[None] for i, row in enumerate(tensor)})
        elif key in POSITIONAL_TARGETS:
            known = official.get(POSITIONAL)
            if known is not None and not tensor.is_meta and not torch.equal(known, tensor):
                raise ValueError(f"{' and '.join(POSITIONAL_TARGETS)} differ; the official layout holds one matrix")
            official[POSITIONAL] = tensor
        elif (old_key := official_sam2_key(key)) is not None:
            official[old_key] = tensor
        else:
            raise KeyError(f"no official name for {key}")
    return official
