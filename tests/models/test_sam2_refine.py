"""A small random SAM 2.1 refines masks through `Refiner` and through `samrefiner refine`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_refine_cli import run_cli
from test_sam2_convert import small_sam2

from conftest import DATA
from samrefiner import load_model
from samrefiner.io.images import read_image, read_mask
from samrefiner.models.sam2 import Sam2Backend
from samrefiner.prompts import PromptMiner, valid_embedding_size
from samrefiner.refine import Refiner, RefinerConfig

DAVIS = DATA / "davis2016"
FRAME = "blackswan/00000"
CONFIG = RefinerConfig(iterations=2, box_expand_threshold=0.1)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The small random SAM 2.1 saved as a transformers folder (what `--model DIR` takes)."""
    folder = tmp_path_factory.mktemp("sam2_small")
    small_sam2().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend() -> Sam2Backend:
    return Sam2Backend(small_sam2(), "small")


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray]:
    image = read_image(DAVIS / "JPEGImages" / f"{FRAME}.jpg")
    mask = read_mask(DAVIS / "Annotations" / f"{FRAME}.png")
    return image, mask[None]


@pytest.fixture(scope="module")
def encoding(backend, frame):
    return backend.encode(frame[0])


def test_cebox_reads_the_whole_sam2_embedding(encoding):
    """SAM 2.1 squashes the image into its square input frame, so every embedding row covers it
    (SAM keeps the aspect ratio: only the rows over the image count)."""
    assert encoding.input_size == (1024, 1024)
    miner = PromptMiner(encoding.original_size, encoding.input_size, encoding.embeddings, box_expand_threshold=0.1)
    assert miner.similarity.vectors.shape == (256, 64, 64)
    assert valid_embedding_size(480, 854, 64, (576, 1024)) == (35, 64)


def test_refiner_cascade_on_sam2(backend, frame, encoding):
    _, coarse = frame
    result = Refiner(backend, CONFIG).refine_encoded(encoding, coarse)

    assert result.masks.shape == coarse.shape and result.masks.dtype == bool
    assert result.candidate_scores.shape == (1, 3)  # SAM 2.1 decodes three candidates
    assert result.chosen[0] == result.candidate_scores[0].argmax()
    assert result.scores[0] == result.candidate_scores[0].max()
    assert not result.empty_output.any() and result.masks.any()

    # the first pass by hand: prompts mined with the lowest-resolution embedding over the whole
    # 1024 x 1024 input frame, three candidates decoded, the best one upscaled to the image
    prompts = PromptMiner(
        encoding.original_size, encoding.input_size, encoding.embeddings, box_expand_threshold=0.1
    ).mine(coarse)
    np.testing.assert_array_equal(result.prompts.boxes, prompts.boxes)
    np.testing.assert_array_equal(result.prompts.points, prompts.points)
    decoded = backend.decode(
        encoding, prompts.points, prompts.labels, prompts.boxes, torch.from_numpy(prompts.mask_inputs)
    )
    best = int(decoded.iou_scores[0].argmax())
    first = (backend.upscale(decoded.low_res_logits[:, best : best + 1], encoding)[:, 0] > 0).numpy()
    one_pass = Refiner(backend, RefinerConfig(iterations=1, box_expand_threshold=0.1)).refine_encoded(encoding, coarse)
    np.testing.assert_array_equal(one_pass.masks, first)
    # the second pass starts from the first pass's output
    second = Refiner(backend, RefinerConfig(iterations=1, box_expand_threshold=0.1)).refine_encoded(encoding, first)
    np.testing.assert_array_equal(result.masks, second.masks)


def test_saved_folder_loads_and_refines_the_same(saved_model, backend, frame):
    image, coarse = frame
    loaded = load_model(str(saved_model))
    assert isinstance(loaded, Sam2Backend)
    expected = Refiner(backend, CONFIG).refine(image, coarse)
    actual = Refiner(loaded, CONFIG).refine(image, coarse)
    np.testing.assert_array_equal(actual.masks, expected.masks)
    np.testing.assert_allclose(actual.candidate_scores, expected.candidate_scores, atol=1e-6)


def test_cli_refines_with_a_sam2_folder(saved_model, backend, frame, tmp_path, capsys, monkeypatch):
    image, coarse = frame
    code, out, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        "--model",
        saved_model,
        "--iterations",
        "2",
        "--box-expand-threshold",
        "0.1",
        "--images",
        DAVIS / "JPEGImages",
        "--masks",
        DAVIS / "Annotations",
        "--out",
        tmp_path / "out",
        "--limit",
        "1",
        "--no-progress",
    )
    assert code == 0, err
    assert out.startswith("1 images, 1 objects refined") and "0 failed" in out
    written = np.asarray(Image.open(tmp_path / "out" / f"{FRAME}.png")) > 0
    expected = Refiner(backend, CONFIG).refine(image, coarse)
    np.testing.assert_array_equal(written, expected.masks[0])
    (line,) = (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
    (record,) = json.loads(line)["objects"]
    assert record["chosen"] == int(expected.chosen[0])
    assert record["predicted_iou"] == pytest.approx(float(expected.scores[0]), abs=1e-5)
