"""HQ-SAM: parity with the hq_reference fixtures (official segment-anything-hq code), the decoder fix,
the official checkpoint layouts and the registry entries."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import FIXTURES, HQ_REF
from transformers import SamHQModel
from transformers.models.sam_hq.modeling_sam_hq import SamHQMaskDecoder

from samrefiner import load_model
from samrefiner.models.base import Encoding
from samrefiner.models.convert_hq import convert_hq_state_dict, rename_hq_key
from samrefiner.models.convert_sam import layout_mismatches, read_encoder_shape
from samrefiner.models.registry import REGISTRY
from samrefiner.models.sam_hq import INTERM_KEY, HQMaskDecoder

CASES = json.loads((HQ_REF / "index.json").read_text())
ONE_ITERATION_CASES = [case for case in CASES if case["iters"] == 1]


def unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(tuple(shape)).astype(bool)


def as_float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32))


@pytest.fixture(scope="module")
def hq_model():
    return load_model(str(HQ_REF / "reduced_sam.pth"))


@pytest.fixture(scope="module")
def encodings(hq_model):
    """hq image file -> (Encoding, hq image arrays, RGB image); each image encoded once."""
    cache: dict[str, tuple[Encoding, dict, np.ndarray]] = {}

    def get(image_arrays: str) -> tuple[Encoding, dict, np.ndarray]:
        if image_arrays not in cache:
            reference = dict(np.load(HQ_REF / image_arrays))
            image = np.load(FIXTURES / str(reference["image_arrays_in"]))["image_rgb"]
            cache[image_arrays] = (hq_model.encode(image), reference, image)
        return cache[image_arrays]

    return get


def decode_case(model, encoding: Encoding, run) -> tuple[torch.Tensor, torch.Tensor]:
    decoded = model.decode(
        encoding,
        run["points_orig"],
        run["point_labels"],
        run["boxes_orig"],
        as_float(run["mask_inputs"]),
        chunk_size=4,  # several chunks for the multi-object cases
    )
    return decoded.low_res_logits, decoded.iou_scores


def test_loads_as_hq_backend(hq_model):
    assert hq_model.kind == "sam_hq"
    assert isinstance(hq_model.model, SamHQModel)
    assert type(hq_model.model.mask_decoder) is HQMaskDecoder


@pytest.mark.parametrize("case", ONE_ITERATION_CASES, ids=lambda case: case["case"])
def test_matches_reference_hq(case, hq_model, encodings):
    encoding, image_ref, _ = encodings(case["image_arrays"])
    run = np.load(HQ_REF / f"{case['case']}.npz")

    assert encoding.original_size == tuple(image_ref["original_size"])
    assert encoding.input_size == tuple(image_ref["input_size"])
    assert (encoding.embeddings - as_float(image_ref["embeddings"])).abs().max().item() < 5e-3
    interm = encoding.features[INTERM_KEY]
    assert interm.shape == image_ref["interm_embeddings"].shape  # (1, 64, 64, encoder width)
    assert (interm - as_float(image_ref["interm_embeddings"])).abs().max().item() < 5e-3

    logits, scores = decode_case(hq_model, encoding, run)
    assert logits.shape == run["low_res_logits"].shape  # (N, 1, 256, 256): one candidate per object
    assert scores.shape == run["iou_predictions"].shape  # (N, 1)
    assert (logits - as_float(run["low_res_logits"])).abs().max().item() < 1e-3
    assert (scores - torch.from_numpy(run["iou_predictions"])).abs().max().item() < 1e-4

    masks = (hq_model.upscale(logits, encoding) > 0).numpy()
    reference_masks = unpack(run["masks_bits"], run["masks_shape"])
    assert masks.shape == reference_masks.shape
    assert (masks == reference_masks).mean() >= 0.999


def test_unpatched_transformers_decoder_fails_parity(hq_model, encodings):
    """transformers' own SamHQMaskDecoder (same weights, same inputs) misses the reference by far."""
    case = "coco_stuff_0__iters1_margin0.0"
    encoding, _, _ = encodings("coco_stuff_0__image.npz")
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
