"""Typed use of the public API, checked by mypy in test_public_api.py (not a test module)."""

from __future__ import annotations

import numpy as np

import samrefiner
from samrefiner import AdaptConfig, InputError, Refiner, RefinerConfig, RefineResult, load_model
from samrefiner.types import POINT_STRATEGIES, PointStrategy


def refine_boxes(model_path: str, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    refiner = Refiner(load_model(model_path), RefinerConfig(iterations=2))
    result: RefineResult = refiner.refine(image, masks)
    first: RefineResult = result[0]
    count: int = len(result) + len(first)
    rles: list[dict[str, object]] = result.to_rle()
    polygons: list[list[np.ndarray]] = result[1:].to_polygons(tolerance=0.5)
    assert count and rles and polygons
    return result.xyxy


def refine_file(refiner: samrefiner.Refiner, path: str, masks: np.ndarray) -> np.ndarray | None:
    try:
        return refiner.refine(path, masks).masks
    except InputError:
        return None


def configs(strategy: PointStrategy) -> list[object]:
    """Option values are Literal types: a literal or a variable typed with the alias passes."""
    return [
        RefinerConfig(point_strategy="box_center"),
        RefinerConfig(point_strategy=strategy),
        AdaptConfig(prompt="box+point"),
    ]


def config_from_text(text: str) -> RefinerConfig:
    """A plain str (from argparse, a file) is checked against the values first."""
    for strategy in POINT_STRATEGIES:
        if text == strategy:
            return RefinerConfig(point_strategy=strategy)
    raise ValueError(f"point strategy {text!r}: choose one of {', '.join(POINT_STRATEGIES)}")
