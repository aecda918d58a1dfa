"""Refinement settings: a plain dataclass (no torch import), so the CLI can build options from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from samrefiner.types import POINT_STRATEGIES, PointStrategy


@dataclass(frozen=True)
class RefinerConfig:
    """What SAMRefiner prompts with and how; the defaults are the reference's.

    box_expand_threshold is CEBox's lambda (0 disables it; the paper uses 0.1 for instance masks),
    box_expand_passes its number of progressive passes; gamma and strength shape the Gaussian
    mask prompt; point_strategy picks the positive point ("distance", "box_center", or "random"
    drawn with `seed`); chunk_size is the number of objects per decoder call.
    """

    use_points: bool = True
    use_negative_point: bool = True
    use_box: bool = True
    use_mask: bool = True
    box_expand_threshold: float = 0.0
    box_expand_passes: int = 1
    gamma: float = 4.0
    strength: float = 30.0
    iterations: int = 5
    point_strategy: PointStrategy = "distance"
    seed: int = 0
    chunk_size: int = 64

    def __post_init__(self) -> None:
        for name in ("use_points", "use_negative_point", "use_box", "use_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (self.use_points or self.use_box or self.use_mask):
            raise ValueError("at least one of use_points, use_box and use_mask must be True")
        _check_number("box_expand_threshold", self.box_expand_threshold, low=0.0, high=1.0)
        _check_number("gamma", self.gamma, low=0.0, inclusive=False)
        _check_number("strength", self.strength, low=0.0, inclusive=False)
        for name in ("box_expand_passes", "iterations", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.point_strategy not in POINT_STRATEGIES:
            raise ValueError(
                f"point_strategy must be one of {', '.join(POINT_STRATEGIES)}, got {self.point_strategy!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")


def _check_number(name: str, value: Any, low: float, high: float = np.inf, inclusive: bool = True) -> None:
    number_like = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    above = number_like and (value >= low if inclusive else value > low)
    if not (above and value <= high and np.isfinite(value)):
        bound = f"{'>=' if inclusive else '>'} {low}" + ("" if high == np.inf else f" and <= {high}")
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
