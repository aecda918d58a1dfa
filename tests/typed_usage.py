"""Typed use of the public API, checked by mypy in test_public_api.py (not a test module)."""

from __future__ import annotations

import numpy as np

import samrefiner
from samrefiner import InputError, Refiner, RefinerConfig, RefineResult, load_model


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
