"""SAM backend: parity with the reference fixtures, checkpoint layouts, bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import SamModel

from conftest import FIXTURES, SAM_REF
from samrefiner import load_model
from samrefiner.errors import CheckpointError
from samrefiner.models.base import Encoding
from samrefiner.models.convert_sam import convert_state_dict, layout_mismatches, read_encoder_shape
from samrefiner.models.sam import resized_size

ONE_ITERATION_CASES = [case for case in json.loads((SAM_REF / "index.json").read_text()) if case["iters"] == 1]


def unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(tuple(shape)).astype(bool)


@pytest.fixture(scope="module")
def encodings(reduced_model):
    """image file name -> (Encoding, reference arrays); each image encoded once."""
    cache: dict[str, tuple[Encoding, dict]] = {}

    def get(image_arrays: str) -> tuple[Encoding, dict]:
        if image_arrays not in cache:
            reference = dict(np.load(SAM_REF / image_arrays))
            cache[image_arrays] = (reduced_model.encode(reference["image_rgb"]), reference)
        return cache[image_arrays]

    return get


@pytest.mark.parametrize("case", ONE_ITERATION_CASES, ids=lambda case: case["case"])
def test_matches_reference_sam(case, reduced_model, encodings):
    encoding, image_ref = encodings(case["image_arrays"])
    run = np.load(SAM_REF / f"{case['case']}.npz")

    assert encoding.original_size == tuple(image_ref["original_size"])
    assert encoding.input_size == tuple(image_ref["input_size"])
    assert encoding.embeddings.shape == (1, 256, 64, 64) and encoding.embeddings.dtype == torch.float32
    reference_embeddings = torch.from_numpy(image_ref["embeddings"].astype(np.float32))
    assert (encoding.embeddings - reference_embeddings).abs().max().item() < 5e-3

    decoded = reduced_model.decode(
        encoding,
        run["points_orig"],
        run["point_labels"],
        run["boxes_orig"],
        torch.from_numpy(run["mask_inputs"].astype(np.float32)),
        chunk_size=4,  # several chunks for the multi-object cases
    )
    reference_logits = torch.from_numpy(run["low_res_logits"].astype(np.float32))
    assert decoded.low_res_logits.shape == reference_logits.shape
    assert (decoded.low_res_logits - reference_logits).abs().max().item() < 1e-3
    assert (decoded.iou_scores - torch.from_numpy(run["iou_predictions"])).abs().max().item() < 1e-4

    masks = reduced_model.upscale(decoded.low_res_logits, encoding) > 0
    reference_masks = unpack(run["masks_bits"], run["masks_shape"])
    assert masks.shape == reference_masks.shape
    # per object and candidate: a whole-image mean would hide one bad mask among many
    agreement = (masks.numpy() == reference_masks).reshape(masks.shape[0] * masks.shape[1], -1).mean(axis=1)
    assert agreement.min() >= 0.999
    assert decoded.iou_scores.argmax(dim=1).tolist() == run["iou_predictions"].argmax(axis=1).tolist()


def test_upscale_equals_full_upsample_then_crop(reduced_model):
    """The cropped upsampling shortcut gives the same values as upsampling all of 256 -> 1024."""
    logits = torch.randn(2, 3, 256, 256)
    encoding = Encoding(torch.zeros(1, 256, 64, 64), original_size=(301, 457), input_size=resized_size(301, 457, 1024))
    full = torch.nn.functional.interpolate(logits, (1024, 1024), mode="bilinear", align_corners=False)
    full = full[..., : encoding.input_size[0], : encoding.input_size[1]]
    expected = torch.nn.functional.interpolate(full, (301, 457), mode="bilinear", align_corners=False)
    assert torch.equal(reduced_model.upscale(logits, encoding), expected)


def test_points_without_box_get_the_official_padding_point(reduced_model):
    """Official SAM appends a "not a point" token at (0, 0) when there is no box; so must we."""
    prompt_encoder = reduced_model.model.prompt_encoder
    point = torch.tensor([[[[100.0, 50.0]]]])
    with torch.inference_mode():
        sparse, _ = prompt_encoder(point, torch.tensor([[[1]]]), None, None)
        with_box, _ = prompt_encoder(point, torch.tensor([[[1]]]), torch.tensor([[[10.0, 20.0, 300.0, 400.0]]]), None)
        positive = prompt_encoder.shared_embedding(point + 0.5, (1024, 1024)) + prompt_encoder.point_embed[1].weight
    assert sparse.shape[2] == 2 and with_box.shape[2] == 3  # point + padding, or point + 2 box corners
    assert torch.allclose(sparse[0, 0, 0], positive[0, 0, 0])
    assert torch.equal(sparse[0, 0, 1], prompt_encoder.not_a_point_embed.weight[0])


@pytest.mark.parametrize(
    ("variant", "width", "depth", "heads", "global_blocks"),
    [
        ("vit_b", 768, 12, 12, (2, 5, 8, 11)),
        ("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        ("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    ],
)
def test_official_layouts_convert_completely(variant, width, depth, heads, global_blocks):
    layout = json.loads((FIXTURES / "checkpoint_layouts" / f"sam_{variant}.json").read_text())
    state_dict = {name: torch.empty(shape, device="meta") for name, shape in layout["tensors"].items()}

    shape = read_encoder_shape(state_dict)
    assert (shape.variant, shape.width, shape.depth, shape.heads) == (variant, width, depth, heads)
    assert shape.global_blocks == global_blocks and shape.window_size == 14

    converted, config = convert_state_dict(state_dict, f"sam_{variant}.json")
    with torch.device("meta"):
        model = SamModel(config)
    assert layout_mismatches(converted, model) == []
    # every official tensor went somewhere (one of them feeds two tied parameters)
    assert len(converted) == len(state_dict) + 1


def test_wrapped_half_precision_dict_loads(tmp_path):
    state_dict = torch.load(SAM_REF / "reduced_sam.pth", weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save({"model": state_dict}, path)
    model = load_model(path)
    assert model.kind == "sam" and model.name == str(path)
    assert all(p.dtype == torch.float32 for p in model.model.parameters())
    assert model.iou_head is model.model.mask_decoder.iou_prediction_head


def check_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_random_bytes_file(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    check_one_line(error, str(path), "not a readable PyTorch checkpoint")


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes((SAM_REF / "reduced_sam.pth").read_bytes()[:100_000])
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    check_one_line(error, str(path), "not a readable PyTorch checkpoint")


def test_non_sam_state_dict(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    check_one_line(error, str(path), "not a SAM checkpoint")


def test_sam_dict_with_foreign_key():
    state_dict = torch.load(SAM_REF / "reduced_sam.pth", weights_only=True)
    state_dict["mask_decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as error:
        load_model(state_dict)
    check_one_line(error, "state dict", "mask_decoder.extra_head.weight")


def test_sam_dict_with_missing_tensor():
    state_dict = torch.load(SAM_REF / "reduced_sam.pth", weights_only=True)
    del state_dict["mask_decoder.iou_prediction_head.layers.2.bias"]
    with pytest.raises(CheckpointError) as error:
        load_model(state_dict)
    check_one_line(error, "missing mask_decoder.iou_prediction_head.proj_out.bias")


def test_missing_file(tmp_path):
    path = tmp_path / "absent" / "sam_vit_h_4b8939.pth"
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    check_one_line(error, str(path), "no such file")


@pytest.mark.parametrize("checkpoint", [SAM_REF / "reduced_sam.pth", FIXTURES / "hq_reference" / "reduced_sam.pth"])
def test_decoder_layer_norms_use_the_official_eps(checkpoint):
    """segment_anything's TwoWayAttentionBlock norms are nn.LayerNorm(eps=1e-5); transformers'
    SamMaskDecoderConfig default is 1e-6. The upscaling and mask-embedding norms keep 1e-6."""
    model = load_model(checkpoint).model
    decoder = model.mask_decoder
    two_way = [
        module.eps
        for layer in decoder.transformer.layers
        for module in (layer.layer_norm1, layer.layer_norm2, layer.layer_norm3, layer.layer_norm4)
    ]
    assert two_way == [1e-5] * len(two_way) and decoder.transformer.layer_norm_final_attn.eps == 1e-5
    assert decoder.upscale_layer_norm.eps == 1e-6
    assert model.prompt_encoder.mask_embed.layer_norm1.eps == 1e-6
