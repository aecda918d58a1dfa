"""SAM 2.1 equals the official `sam2` image predictor (`SAM2ImagePredictor`), on every case and prompt
set of ../shared/fixtures/sam2_reference.

The official checkpoint (`{"model": state_dict}`, random weights in the sam2.1_hiera_tiny layout) is
rebuilt from the seed by the fixture's own make_weights.py into a temp folder and loaded through
`load_model(path)`, as a user loads sam2.1_hiera_tiny.pt. Bounds: image embedding and low-res logits
within 1e-3 of the largest reference value, IoU predictions within 1e-4, every candidate mask at
image size with IoU >= 0.999 against the official one. The float16 storage of the fixtures sets the
floor (measured there: 2.6e-4 and 3.9e-4 relative).

`python tests/models/test_sam2_official_parity.py` prints the worst figures over all cases and prompt sets.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, FIXTURES
from samrefiner import load_model
from samrefiner.models.base import Decoded, Encoding
from samrefiner.models.sam2 import Sam2Backend

REFERENCE = FIXTURES / "sam2_reference"
LAYOUTS = FIXTURES / "checkpoint_layouts"
INDEX = json.loads((REFERENCE / "index.json").read_text())
CASES = [case["case"] for case in INDEX["cases"]]
RUNS = [(case["case"], prompt_set) for case in INDEX["cases"] for prompt_set in case["prompt_sets"]]
EMBEDDING_BOUND = LOGITS_BOUND = 1e-3  # max |diff| relative to the largest reference value
IOU_BOUND = 1e-4  # absolute
MASK_IOU_BOUND = 0.999


def load_official_checkpoint(folder: Path) -> Sam2Backend:
    """The fixtures' checkpoint, made in `folder` by their make_weights.py and loaded as a user would."""
    spec = importlib.util.spec_from_file_location("make_weights", REFERENCE / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    layout = json.loads((LAYOUTS / f"{INDEX['layout']}.json").read_text())
    path = folder / f"{INDEX['layout']}.pt"
    torch.save({"model": make_weights.make_state_dict(layout, INDEX["seed"])}, path)
    model = load_model(path)
    path.unlink()  # 156 MB
    assert isinstance(model, Sam2Backend)
    return model


@pytest.fixture(scope="session")
def official_sam2(tmp_path_factory) -> Sam2Backend:
    return load_official_checkpoint(tmp_path_factory.mktemp("sam2_official"))


@cache
def reference(case: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{case}.npz") as arrays:
        return dict(arrays)


@cache
def image(case: str) -> np.ndarray:
    """The case's image as the fixtures read it: OpenCV, BGR -> RGB."""
    (entry,) = [entry for entry in INDEX["cases"] if entry["case"] == case]
    return cv2.cvtColor(cv2.imread(str(DATA / entry["image"])), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def encodings(official_sam2) -> Callable[[str], Encoding]:
    """Each case's image encoded once, when a test first needs it."""
    return cache(lambda case: official_sam2.encode(image(case)))


def decode(model: Sam2Backend, encoding: Encoding, case: str, prompt_set: str) -> Decoded:
    """The predictor's call for one prompt set: a box, two points, both, or both and the mask input."""
    arrays = reference(case)
    with_box, with_points = prompt_set.startswith("box"), "points" in prompt_set
    return model.decode(
        encoding,
        arrays["points"][None] if with_points else None,
        arrays["labels"][None] if with_points else None,
        arrays["box"][None] if with_box else None,
        torch.from_numpy(arrays["mask_input"][None]) if prompt_set.endswith("mask") else None,
    )


def official_masks(case: str, prompt_set: str) -> np.ndarray:
    arrays = reference(case)
    shape = arrays[f"{prompt_set}__masks_shape"]
    return np.unpackbits(arrays[f"{prompt_set}__masks_bits"])[: np.prod(shape)].reshape(shape).astype(bool)


def relative_max_difference(ours: torch.Tensor, theirs: np.ndarray) -> float:
    theirs_t = torch.from_numpy(theirs.astype(np.float32))
    return float((ours - theirs_t).abs().max() / theirs_t.abs().max())


def mask_ious(ours: np.ndarray, theirs: np.ndarray) -> list[float]:
    """Per candidate IoU (1 where both are empty)."""
    ious = []
    for mine, official in zip(ours, theirs):
        union = np.logical_or(mine, official).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(mine, official).sum() / union))
    return ious


def run_figures(model: Sam2Backend, encoding: Encoding, case: str, prompt_set: str) -> dict[str, float]:
    """Low-res logits (relative), IoU predictions (absolute) and the worst candidate mask IoU of one run."""
    decoded = decode(model, encoding, case, prompt_set)
    arrays = reference(case)
    masks = (model.upscale(decoded.low_res_logits, encoding)[0] > 0).numpy()
    return {
        "logits": relative_max_difference(decoded.low_res_logits[0], arrays[f"{prompt_set}__low_res_logits"]),
        "iou": float(np.abs(decoded.iou_scores[0].numpy() - arrays[f"{prompt_set}__iou"]).max()),
        "mask_iou": min(mask_ious(masks, official_masks(case, prompt_set))),
    }


@pytest.mark.parametrize("case", CASES)
def test_image_embedding(encodings, case):
    difference = relative_max_difference(encodings(case).embeddings, reference(case)["image_embed"])
    assert difference <= EMBEDDING_BOUND, f"{case}: embedding differs by {difference:.2e} relative"


@pytest.mark.parametrize(("case", "prompt_set"), RUNS)
def test_logits_iou_and_masks(official_sam2, encodings, case, prompt_set):
    figures = run_figures(official_sam2, encodings(case), case, prompt_set)
    assert figures["logits"] <= LOGITS_BOUND, f"{case}/{prompt_set}: {figures}"
    assert figures["iou"] <= IOU_BOUND, f"{case}/{prompt_set}: {figures}"
    assert figures["mask_iou"] >= MASK_IOU_BOUND, f"{case}/{prompt_set}: {figures}"


def test_every_case_and_prompt_set_is_checked():
    assert len(CASES) == 4 and len(RUNS) == 16
    for case, prompt_set in RUNS:
        assert f"{prompt_set}__low_res_logits" in reference(case)


def worst_figures() -> dict[str, float]:
    """The worst embedding, logits, IoU and candidate-mask figures over every case and prompt set."""
    with tempfile.TemporaryDirectory() as folder:
        model = load_official_checkpoint(Path(folder))
    worst = {"embedding": 0.0, "logits": 0.0, "iou": 0.0, "mask_iou": 1.0}
    for case in CASES:
        encoding = model.encode(image(case))
        embedding = relative_max_difference(encoding.embeddings, reference(case)["image_embed"])
        worst["embedding"] = max(worst["embedding"], embedding)
        for prompt_set in [prompt_set for run_case, prompt_set in RUNS if run_case == case]:
            figures = run_figures(model, encoding, case, prompt_set)
            worst["logits"] = max(worst["logits"], figures["logits"])
            worst["iou"] = max(worst["iou"], figures["iou"])
            worst["mask_iou"] = min(worst["mask_iou"], figures["mask_iou"])
    return worst


if __name__ == "__main__":
    worst = worst_figures()
    print(
        f"over {len(CASES)} cases and {len(RUNS)} prompt sets: image embedding {worst['embedding']:.2e}, "
        f"low-res logits {worst['logits']:.2e} (max |diff| relative to the largest reference value), "
        f"IoU predictions {worst['iou']:.2e} (absolute), worst candidate mask IoU {worst['mask_iou']:.5f}"
    )
