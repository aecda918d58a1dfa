"""Helpers for the parity tests against the reference runs of ../shared/fixtures (the authors' refine
loop on official modeling code): sam_reference's layout, shared by hq_reference and mobilesam_reference
(whose image files name the sam_reference file holding the image and the coarse masks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from conftest import FIXTURES
from samrefiner.models.base import Decoded, Encoding
from samrefiner.refine import Refiner, RefinerConfig, RefineResult


def unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(tuple(shape)).astype(bool)


def as_float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32))


def image_encodings(model, reference: Path) -> Callable[[str], tuple[Encoding, dict, np.ndarray]]:
    """image file of `reference` -> (Encoding, its arrays, coarse masks); each image encoded once.

    The image and the coarse masks are those of the sam_reference file that `image_arrays_in` names.
    """
    cache: dict[str, tuple[Encoding, dict, np.ndarray]] = {}

    def get(image_arrays: str) -> tuple[Encoding, dict, np.ndarray]:
        if image_arrays not in cache:
            arrays = dict(np.load(reference / image_arrays))
            shared = np.load(FIXTURES / str(arrays["image_arrays_in"]))
            coarse = unpack(shared["coarse_bits"], shared["coarse_shape"])
            cache[image_arrays] = (model.encode(shared["image_rgb"]), arrays, coarse)
        return cache[image_arrays]

    return get


class RecordingModel:
    """A backend that keeps what each decode returned (to check the decoder inside the cascade)."""

    def __init__(self, model) -> None:
        self.model = model
        self.decoded: list[Decoded] = []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def decode(self, *args, **kwargs) -> Decoded:
        self.decoded.append(self.model.decode(*args, **kwargs))
        return self.decoded[-1]


def config_of(case: dict, iterations: int) -> RefinerConfig:
    """The authors' refine-loop settings of a fixture case."""
    return RefinerConfig(
        box_expand_threshold=case["box_expand_threshold"],
        gamma=case["gamma"],
        strength=case["strength"],
        iterations=iterations,
    )


def first_pass(model, case: dict, encoding: Encoding, coarse: np.ndarray) -> tuple[RefineResult, Decoded]:
    """One pass of our Refiner, with what its decoder returned."""
    recorder = RecordingModel(model)
    result = Refiner(recorder, config_of(case, 1)).refine_encoded(encoding, coarse)
    (decoded,) = recorder.decoded
    return result, decoded


def first_pass_cache(model, encodings) -> Callable[[dict], tuple[RefineResult, Decoded]]:
    """case -> the one-pass, lambda = 0 run of its image (shared by the five-iteration cases)."""
    cache: dict[str, tuple[RefineResult, Decoded]] = {}

    def get(case: dict) -> tuple[RefineResult, Decoded]:
        if case["image_arrays"] not in cache:
            encoding, _, coarse = encodings(case["image_arrays"])
            cache[case["image_arrays"]] = first_pass(model, {**case, "box_expand_threshold": 0.0}, encoding, coarse)
        return cache[case["image_arrays"]]

    return get


def assert_prompts_equal(result: RefineResult, run) -> None:
    prompts = result.prompts
    np.testing.assert_array_equal(prompts.points, run["points_orig"])
    np.testing.assert_array_equal(prompts.labels, run["point_labels"])
    np.testing.assert_array_equal(prompts.boxes, run["boxes_orig"])
    np.testing.assert_array_equal(prompts.box_expanded, run["box_expanded"].astype(bool))
    assert np.abs(prompts.mask_inputs - run["mask_inputs"].astype(np.float32)).max() < 0.05  # float16 storage


def per_object_agreement(masks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per object, the fraction of pixels equal to the reference's."""
    return (masks == reference).reshape(len(masks), -1).mean(axis=1)
