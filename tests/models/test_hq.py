"""HQ-SAM: parity with the hq_reference fixtures (official segment-anything-hq code), the decoder fix,
the official checkpoint layouts and the registry entries."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_refine_cli import run_cli
from transformers import SamHQModel
from transformers.models.sam_hq.modeling_sam_hq import SamHQMaskDecoder

from conftest import DATA, FIXTURES, HQ_REF
from reference_runs import (
    as_float,
    assert_prompts_equal,
    config_of,
    first_pass,
    first_pass_cache,
    image_encodings,
    per_object_agreement,
    unpack,
)
from samrefiner import load_model
from samrefiner.io.digests import file_sha256
from samrefiner.io.images import read_image, read_mask
from samrefiner.models.base import Encoding
from samrefiner.models.convert_hq import convert_hq_state_dict, rename_hq_key
from samrefiner.models.convert_sam import layout_mismatches, read_encoder_shape
from samrefiner.models.registry import REGISTRY
from samrefiner.models.sam_hq import INTERM_KEY, HQMaskDecoder
from samrefiner.refine import Refiner, RefinerConfig

DAVIS = DATA / "davis2016"
CASES = json.loads((HQ_REF / "index.json").read_text())
ONE_ITERATION_CASES = [case for case in CASES if case["iters"] == 1]
FIVE_ITERATION_CASES = [case for case in CASES if case["iters"] == 5]
# Objects whose five-pass outcome flips between two end states under float noise: with random weights
# this case sits on a knife edge. bench/hq_cascade_sensitivity.py: from our encoding they agree on
# 97.27 % / 97.23 %; adding N(0, 1e-4) to the early ViT features gives 99.99 % for one seed in four,
# and so do the fixture's own float16-rounded features (99.94 % / 99.99 %); every other object >= 99.98 %.
CHAOTIC_OBJECTS = {"coco_stuff_3__iters5_margin0.0": (0, 7)}


@pytest.fixture(scope="module")
def hq_model():
    return load_model(str(HQ_REF / "reduced_sam.pth"))


@pytest.fixture(scope="module")
def encodings(hq_model):
    """hq image file -> (Encoding, hq image arrays, coarse masks); each image encoded once."""
    return image_encodings(hq_model, HQ_REF)


def decode_case(model, encoding: Encoding, run) -> tuple[torch.Tensor, torch.Tensor]:
    decoded = model.decode(
        encoding,
        run["points_orig"],
        run["point_labels"],
        run["boxes_orig"],
        as_float(run["mask_inputs"]),
        chunk_size=4,  # several decoder calls for the multi-object cases
    )
    return decoded.low_res_logits, decoded.iou_scores


@pytest.fixture(scope="module")
def first_passes(hq_model, encodings):
    """case -> the one-pass, lambda = 0 run of its image (shared by the five-iteration cases)."""
    return first_pass_cache(hq_model, encodings)


def per_object_iou(masks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """IoU with the reference per object: a small object cannot hide its errors in the background."""
    shared = (masks & reference).reshape(len(masks), -1).sum(axis=1)
    union = (masks | reference).reshape(len(masks), -1).sum(axis=1)
    return np.where(union == 0, 1.0, shared / np.maximum(union, 1))


def test_loads_as_hq_backend(hq_model):
    assert hq_model.kind == "sam_hq"
    assert isinstance(hq_model.model, SamHQModel)
    assert type(hq_model.model.mask_decoder) is HQMaskDecoder


@pytest.mark.parametrize("case", ONE_ITERATION_CASES, ids=lambda case: case["case"])
def test_matches_reference_hq_one_iteration(case, hq_model, encodings, first_passes):
    """Encoder, intermediate features, prompts, decoder outputs and refined masks of one pass."""
    encoding, image_ref, coarse = encodings(case["image_arrays"])
    run = np.load(HQ_REF / f"{case['case']}.npz")

    assert encoding.original_size == tuple(image_ref["original_size"])
    assert encoding.input_size == tuple(image_ref["input_size"])
    assert (encoding.embeddings - as_float(image_ref["embeddings"])).abs().max().item() < 5e-3
    interm = encoding.features[INTERM_KEY]
    assert interm.shape == image_ref["interm_embeddings"].shape  # (1, 64, 64, encoder width)
    assert (interm - as_float(image_ref["interm_embeddings"])).abs().max().item() < 5e-3

    if case["box_expand_threshold"] == 0:
        result, decoded = first_passes(case)
    else:
        result, decoded = first_pass(hq_model, case, encoding, coarse)
    assert_prompts_equal(result, run)
    assert decoded.low_res_logits.shape == run["low_res_logits"].shape  # (N, 1, 256, 256): one candidate each
    assert decoded.iou_scores.shape == run["iou_predictions"].shape  # (N, 1)
    assert (decoded.low_res_logits - as_float(run["low_res_logits"])).abs().max().item() < 1e-3
    assert (decoded.iou_scores - torch.from_numpy(run["iou_predictions"])).abs().max().item() < 1e-4
    assert result.candidate_scores.shape == run["iou_predictions"].shape and (result.chosen == 0).all()

    decoder_masks = unpack(run["masks_bits"], run["masks_shape"])[:, 0]
    assert per_object_agreement(result.masks, decoder_masks).min() >= 0.999
    refined = unpack(run["refined_bits"], run["refined_shape"])
    assert per_object_agreement(result.masks, refined).min() >= 0.999
    assert per_object_iou(result.masks, refined).min() >= 0.999


@pytest.mark.parametrize("case", FIVE_ITERATION_CASES, ids=lambda case: case["case"])
def test_matches_reference_hq_cascade(case, hq_model, encodings, first_passes):
    """Five passes: the first (shared with the one-pass case) then four more on its masks, which is
    what the cascade does when no output comes back empty. Final masks agree per object."""
    encoding, _, _ = encodings(case["image_arrays"])
    run = np.load(HQ_REF / f"{case['case']}.npz")
    first, _ = first_passes(case)
    assert_prompts_equal(first, run)
    assert not first.empty_output.any()
    result = Refiner(hq_model, config_of(case, 4)).refine_encoded(encoding, first.masks)
    agreement = per_object_agreement(result.masks, unpack(run["refined_bits"], run["refined_shape"]))
    chaotic = CHAOTIC_OBJECTS.get(case["case"], ())
    stable = np.setdiff1d(np.arange(len(agreement)), chaotic)
    assert agreement[stable].min() >= 0.995
    assert agreement.min() >= 0.97


def test_transformers_folder_loads_with_the_official_decoder(hq_model, encodings, tmp_path):
    """A SamHQModel saved with save_pretrained (what the syscv-community hub folders hold)."""
    hq_model.model.save_pretrained(tmp_path / "sam_hq")
    loaded = load_model(str(tmp_path / "sam_hq"))
    assert loaded.kind == "sam_hq" and type(loaded.model.mask_decoder) is HQMaskDecoder
    encoding, _, _ = encodings("voc_example__image.npz")
    run = np.load(HQ_REF / "voc_example__iters1_margin0.0.npz")
    expected, actual = decode_case(hq_model, encoding, run), decode_case(loaded, encoding, run)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)  # same weights, other memory layout


def test_unpatched_transformers_decoder_fails_parity(hq_model, encodings):
    """transformers' own SamHQMaskDecoder (same weights, same inputs) misses the reference by far."""
    case = "voc_example__iters1_margin0.0"
    encoding, _, _ = encodings("voc_example__image.npz")
    run = np.load(HQ_REF / f"{case}.npz")
    decoder = hq_model.model.mask_decoder
    decoder.__class__ = SamHQMaskDecoder
    try:
        logits, scores = decode_case(hq_model, encoding, run)
    finally:
        decoder.__class__ = HQMaskDecoder
    # it returns SAM's three masks sorted by IoU, each plus the HQ mask: the first is the official pick
    best_logits, best_scores = logits[:, :1], scores[:, :1]
    assert (best_scores - torch.from_numpy(run["iou_predictions"])).abs().max().item() < 1e-4  # IoU head unaffected
    assert (best_logits - as_float(run["low_res_logits"])).abs().max().item() > 0.1
    masks = (hq_model.upscale(best_logits, encoding) > 0).numpy()
    agreement = (masks == unpack(run["masks_bits"], run["masks_shape"])).reshape(len(masks), -1).mean(axis=1)
    assert agreement.max() < 0.99  # every object far below the 99.9 % parity bar


@pytest.mark.parametrize("variant", ["b", "l", "h"])
def test_official_hq_layouts_map_onto_samhqmodel(variant):
    """Every tensor of sam_hq_vit_{b,l,h}.pth lands on a same-shape SamHQModel parameter and back."""
    layout = json.loads((FIXTURES / "checkpoint_layouts" / f"sam_hq_vit_{variant}.json").read_text())
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in layout["tensors"].items()}
    assert len(state_dict) == layout["num_tensors"]

    converted, config = convert_hq_state_dict(state_dict, f"sam_hq_vit_{variant}.pth")
    with torch.device("meta"):
        model = SamHQModel(config)
    assert layout_mismatches(converted, model) == []  # nothing missing, unexpected or misshapen
    assert read_encoder_shape(state_dict).variant == f"vit_{variant}"
    assert config.mask_decoder_config.vit_dim == config.vision_config.hidden_size
    assert sum(rename_hq_key(key) is not None for key in state_dict) == 25  # HQ-only tensors on top of SAM's


def test_registry_has_official_hq_checkpoints():
    for variant in ("b", "l", "h"):
        entry = REGISTRY[f"hq_vit_{variant}"]
        assert entry.kind == "sam_hq"
        assert entry.url == f"https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_{variant}.pth"
        assert entry.file_name == f"sam_hq_vit_{variant}.pth"
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert len({REGISTRY[f"hq_vit_{v}"].sha256 for v in "blh"}) == 3


def test_registry_name_through_the_cli(hq_model, tmp_path, capsys, monkeypatch):
    """`samrefiner refine --model hq_vit_b` with the file already in the cache (the reduced model
    standing in for it): the HQ backend refines, one candidate per object."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / REGISTRY["hq_vit_b"].file_name).symlink_to(HQ_REF / "reduced_sam.pth")
    monkeypatch.setenv("SAMREFINER_CACHE", str(cache))
    stand_in = dataclasses.replace(REGISTRY["hq_vit_b"], sha256=file_sha256(HQ_REF / "reduced_sam.pth"))
    monkeypatch.setitem(REGISTRY, "hq_vit_b", stand_in)  # cached files are sha256-checked on use
    code, out, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        "--model",
        "hq_vit_b",
        "--iterations",
        "1",
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
    assert out.startswith("1 images, 1 objects refined")
    image = read_image(DAVIS / "JPEGImages" / "blackswan" / "00000.jpg")
    coarse = read_mask(DAVIS / "Annotations" / "blackswan" / "00000.png")
    expected = Refiner(hq_model, RefinerConfig(iterations=1)).refine(image, coarse[None])
    written = np.asarray(Image.open(tmp_path / "out" / "blackswan" / "00000.png")) > 0
    np.testing.assert_array_equal(written, expected.masks[0])
    (line,) = (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
    (record,) = json.loads(line)["objects"]
    assert record["chosen"] == 0
    assert record["predicted_iou"] == pytest.approx(float(expected.scores[0]), abs=1e-5)
