"""MobileSAM: parity with the mobilesam_reference fixtures (the authors' refine loop on the official
mobile_sam code, reduced random TinyViT), the official checkpoint layouts (MobileSAM vit_t and
LiteMedSAM) and the registry entry."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from conftest import FIXTURES
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
from samrefiner.errors import CheckpointError
from samrefiner.io.digests import file_sha256
from samrefiner.models.convert_tiny_vit import (
    build_tiny_vit_sam,
    image_size_of,
    read_tiny_vit_shape,
    rename_tiny_vit_key,
)
from samrefiner.models.lite_medsam import LiteMedSamBackend
from samrefiner.models.mobile_sam import MobileSamBackend
from samrefiner.models.registry import REGISTRY
from samrefiner.models.tiny_vit import TinyViT
from samrefiner.refine import Refiner

MOBILE_REF = FIXTURES / "mobilesam_reference"
LAYOUTS = FIXTURES / "checkpoint_layouts"
CONFIG = json.loads((MOBILE_REF / "config.json").read_text())
CASES = json.loads((MOBILE_REF / "index.json").read_text())
ONE_ITERATION_CASES = [case for case in CASES if case["iters"] == 1]
FIVE_ITERATION_CASES = [case for case in CASES if case["iters"] == 5]


@pytest.fixture(scope="module")
def mobile_model():
    return load_model(str(MOBILE_REF / "reduced_mobile_sam.pth"))


@pytest.fixture(scope="module")
def encodings(mobile_model):
    return image_encodings(mobile_model, MOBILE_REF)


@pytest.fixture(scope="module")
def first_passes(mobile_model, encodings):
    return first_pass_cache(mobile_model, encodings)


def test_loads_as_mobile_sam_with_the_fixture_encoder(mobile_model):
    encoder = CONFIG["image_encoder"]
    assert isinstance(mobile_model, MobileSamBackend) and mobile_model.kind == "mobile_sam"
    assert isinstance(mobile_model.model.vision_encoder, TinyViT)
    shape = mobile_model.model.vision_encoder.shape
    assert list(shape.embed_dims) == encoder["embed_dims"] and list(shape.depths) == encoder["depths"]
    assert list(shape.num_heads[1:]) == encoder["num_heads"][1:]
    assert list(shape.window_sizes[1:]) == encoder["window_sizes"][1:]
    assert shape.merge_strides == (2, 2, 1)  # stride 1 into the 320-wide last stage
    assert (mobile_model.image_size, mobile_model.embedding_size, mobile_model.mask_input_size) == (1024, 64, 256)


@pytest.mark.parametrize("case", ONE_ITERATION_CASES, ids=lambda case: case["case"])
def test_matches_reference_one_iteration(case, mobile_model, encodings, first_passes):
    """Embedding, prompts, decoder outputs and refined masks of one pass."""
    encoding, image_ref, coarse = encodings(case["image_arrays"])
    run = np.load(MOBILE_REF / f"{case['case']}.npz")
    assert encoding.input_size == tuple(image_ref["input_size"])
    assert (encoding.embeddings - as_float(image_ref["embeddings"])).abs().max().item() < 5e-3  # float16 floor 2e-3

    if case["box_expand_threshold"] == 0:
        result, decoded = first_passes(case)
    else:
        result, decoded = first_pass(mobile_model, case, encoding, coarse)
    assert_prompts_equal(result, run)
    assert decoded.low_res_logits.shape == run["low_res_logits"].shape  # (N, 3, 256, 256)
    assert (decoded.low_res_logits - as_float(run["low_res_logits"])).abs().max().item() < 1e-3
    assert (decoded.iou_scores - torch.from_numpy(run["iou_predictions"])).abs().max().item() < 1e-4
    np.testing.assert_array_equal(result.chosen, run["iou_predictions"].argmax(axis=1))
    refined = unpack(run["refined_bits"], run["refined_shape"])
    assert per_object_agreement(result.masks, refined).min() >= 0.999


@pytest.mark.parametrize("case", FIVE_ITERATION_CASES, ids=lambda case: case["case"])
def test_matches_reference_five_iterations(case, mobile_model, encodings, first_passes):
    """Five passes: the first (shared with the one-pass case), then four more on its masks."""
    encoding, _, _ = encodings(case["image_arrays"])
    run = np.load(MOBILE_REF / f"{case['case']}.npz")
    first, _ = first_passes(case)
    assert_prompts_equal(first, run)
    result = Refiner(mobile_model, config_of(case, 4)).refine_encoded(encoding, first.masks)
    agreement = per_object_agreement(result.masks, unpack(run["refined_bits"], run["refined_shape"]))
    assert agreement.min() >= 0.995


def layout_state_dict(name: str) -> dict[str, torch.Tensor]:
    layout = json.loads((LAYOUTS / name).read_text())
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in layout["tensors"].items()}
    assert len(state_dict) == layout["num_tensors"]
    return state_dict


@pytest.mark.parametrize(
    ("layout", "backend", "patch_kernel", "image_size", "dropped"),
    [
        (
            "mobile_sam_vit_t.json",
            MobileSamBackend,
            3,
            1024,
            r"\.num_batches_tracked$|^image_encoder\.(norm_head|head)\.",
        ),
        ("lite_medsam.json", LiteMedSamBackend, 1, 256, r"\.num_batches_tracked$"),
    ],
)
def test_official_layouts_map_every_tensor(layout, backend, patch_kernel, image_size, dropped):
    """Every tensor of the full official checkpoint lands on a same-shape parameter (built on the meta
    device); only the BatchNorm counters and MobileSAM's unused classifier head are dropped."""
    state_dict = layout_state_dict(layout)
    assert backend.matches_state_dict(state_dict)
    assert [other.matches_state_dict(state_dict) for other in (MobileSamBackend, LiteMedSamBackend)].count(True) == 1
    shape = read_tiny_vit_shape(state_dict, layout)
    assert shape.embed_dims == (64, 128, 160, 320) and shape.depths == (2, 2, 6, 2)
    assert shape.num_heads[1:] == (4, 5, 10) and shape.window_sizes[1:] == (7, 14, 7)
    assert shape.patch_kernel == patch_kernel and image_size_of(shape) == image_size
    positional = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"  # copied to two places
    unmapped = [key for key in state_dict if rename_tiny_vit_key(key) is None and key != positional]
    assert unmapped and all(re.search(dropped, key) for key in unmapped)
    model = build_tiny_vit_sam(state_dict, layout)  # strict: nothing missing, unexpected or misshapen
    assert len(model.state_dict()) == len(state_dict) - len(unmapped) + 1  # + the positional matrix's 2nd copy
    assert model.config.prompt_encoder_config.image_size == image_size


def test_batchnorm_counters_are_optional_and_stray_keys_refused():
    state_dict = layout_state_dict("mobile_sam_vit_t.json")
    without_counters = {key: value for key, value in state_dict.items() if not key.endswith("num_batches_tracked")}
    build_tiny_vit_sam(without_counters, "no counters")
    stray = {**state_dict, "image_encoder.layers.1.blocks.0.attn.extra": torch.empty(3, device="meta")}
    with pytest.raises(
        CheckpointError, match=r"^stray: .*unexpected vision_encoder\.layers\.1\.blocks\.0\.attn\.extra"
    ):
        build_tiny_vit_sam(stray, "stray")
    with pytest.raises(CheckpointError, match=r"^gap: .*encoder stages \[0, 1, 2, 3, 9\]"):
        build_tiny_vit_sam({**state_dict, "image_encoder.layers.9.blocks.0.attn.qkv.weight": torch.empty(3)}, "gap")


def test_missing_tensors_are_named_with_how_many_more():
    state_dict = layout_state_dict("mobile_sam_vit_t.json")
    head = "mask_decoder.iou_prediction_head.layers.2."
    assert {f"{head}weight", f"{head}bias"} <= state_dict.keys()
    without_head = {key: value for key, value in state_dict.items() if not key.startswith(head)}
    shape = read_tiny_vit_shape(state_dict, "head")
    with pytest.raises(CheckpointError) as raised:
        build_tiny_vit_sam(without_head, "cut.pt")
    message = str(raised.value)
    assert message.startswith(f"cut.pt: does not fit a TinyViT SAM of shape {shape}: missing mask_decoder.")
    assert message.endswith(" (and 1 more)")


def test_registry_has_the_official_mobile_sam_checkpoint():
    entry = REGISTRY["mobile_sam"]
    assert entry.kind == "mobile_sam" and entry.file_name == "mobile_sam.pt"
    assert re.fullmatch(
        r"https://github\.com/ChaoningZhang/MobileSAM/raw/[0-9a-f]{40}/weights/mobile_sam\.pt", entry.url
    )
    assert entry.sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"


def test_registry_name_loads_the_cached_file(tmp_path, monkeypatch):
    """`load_model("mobile_sam")` with the file already in the cache (the reduced model standing in)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mobile_sam.pt").symlink_to(MOBILE_REF / "reduced_mobile_sam.pth")
    monkeypatch.setenv("SAMREFINER_CACHE", str(cache))
    stand_in = dataclasses.replace(REGISTRY["mobile_sam"], sha256=file_sha256(MOBILE_REF / "reduced_mobile_sam.pth"))
    monkeypatch.setitem(REGISTRY, "mobile_sam", stand_in)  # cached files are sha256-checked on use
    model = load_model("mobile_sam")
    assert isinstance(model, MobileSamBackend) and model.name == str(cache / "mobile_sam.pt")
