"""SAM 2.1 backend on a tiny random transformers model; transformers folders through load_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Sam2Config, Sam2Model

from samrefiner import load_model
from samrefiner.errors import CheckpointError
from samrefiner.models.sam2 import Sam2Backend
from whole_frame_reference import antialiased_resize

IMAGE = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
POINTS = np.array([[[50, 60], [10, 10]], [[100, 30], [0, 0]]])
LABELS = np.array([[1, 0], [1, -1]])  # the second object has no negative point
BOXES = np.array([[20, 30, 150, 100], [120, 10, 199, 119]])


def tiny_sam2() -> Sam2Model:
    """A seeded Sam2Model with a minimal Hiera trunk and one decoder layer (full 1024 input, 256 channels)."""
    torch.manual_seed(0)
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 8,
        "num_attention_heads": 1,
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [8, 16, 32, 64],
        "num_attention_heads_per_stage": [1, 1, 1, 1],
        "global_attention_blocks": [3],
    }
    config = Sam2Config(
        vision_config={"backbone_config": backbone, "backbone_channel_list": [64, 32, 16, 8]},
        mask_decoder_config={"mlp_dim": 64, "num_hidden_layers": 1},
    )
    return Sam2Model(config).eval()


@pytest.fixture(scope="module")
def backend() -> Sam2Backend:
    return Sam2Backend(tiny_sam2(), "tiny")


@pytest.fixture(scope="module")
def encoding(backend):
    return backend.encode(IMAGE)


def input_frame(points: np.ndarray) -> torch.Tensor:
    """(x, y) in the 120 x 200 image -> the 1024 x 1024 SAM 2 input frame."""
    return torch.tensor(points * np.array([1024 / 200, 1024 / 120]), dtype=torch.float32)


def test_encode_shapes(encoding):
    assert encoding.embeddings.shape == (1, 256, 64, 64) and encoding.embeddings.dtype == torch.float32
    assert encoding.features["high_res_0"].shape == (1, 32, 256, 256)
    assert encoding.features["high_res_1"].shape == (1, 64, 128, 128)
    assert encoding.original_size == (120, 200) and encoding.input_size == (1024, 1024)


def test_points_and_boxes_match_transformers_forward(backend, encoding):
    decoded = backend.decode(encoding, POINTS, LABELS, BOXES, None, chunk_size=1)
    image_embeddings = [encoding.features["high_res_0"], encoding.features["high_res_1"], encoding.embeddings]
    with torch.inference_mode():
        expected = backend.model(
            image_embeddings=image_embeddings,
            input_points=input_frame(POINTS)[None],
            input_labels=torch.tensor(LABELS)[None],
            input_boxes=input_frame(BOXES.reshape(2, 2, 2)).reshape(1, 2, 4),
            multimask_output=True,
        )
    assert decoded.low_res_logits.shape == (2, 3, 256, 256) and decoded.iou_scores.shape == (2, 3)
    assert torch.allclose(decoded.low_res_logits, expected.pred_masks[0], atol=1e-4)
    assert torch.allclose(decoded.iou_scores, expected.iou_scores[0], atol=1e-5)


def test_points_box_and_mask_prompt_match_transformers_forward(backend, encoding):
    mask = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(1)) * 5
    decoded = backend.decode(encoding, POINTS[:1], LABELS[:1], BOXES[:1], mask)
    without_mask = backend.decode(encoding, POINTS[:1], LABELS[:1], BOXES[:1], None)
    image_embeddings = [encoding.features["high_res_0"], encoding.features["high_res_1"], encoding.embeddings]
    with torch.inference_mode():
        expected = backend.model(
            image_embeddings=image_embeddings,
            input_points=input_frame(POINTS[:1])[None],
            input_labels=torch.tensor(LABELS[:1])[None],
            input_boxes=input_frame(BOXES[:1].reshape(1, 2, 2)).reshape(1, 1, 4),
            input_masks=mask,
            multimask_output=True,
        )
    assert torch.allclose(decoded.low_res_logits, expected.pred_masks[0], atol=1e-4)
    assert not torch.allclose(decoded.low_res_logits, without_mask.low_res_logits, atol=1e-3)


def test_mask_prompt_alone_and_upscale(backend, encoding):
    decoded = backend.decode(encoding, None, None, None, torch.zeros(2, 1, 256, 256))
    assert decoded.low_res_logits.shape == (2, 3, 256, 256)
    upscaled = backend.upscale(decoded.low_res_logits, encoding)
    expected = torch.nn.functional.interpolate(decoded.low_res_logits, (120, 200), mode="bilinear")
    assert upscaled.shape == (2, 3, 120, 200) and torch.equal(upscaled, expected)
    assert backend.iou_head is backend.model.mask_decoder.iou_prediction_head


def test_images_are_read_as_the_official_predictor_does(backend):
    """Float [0, 1] image, antialiased bilinear resize to 1024 x 1024 (an image larger than the frame,
    so antialiasing matters), ImageNet mean and std: checked against an independent resize."""
    image = np.random.default_rng(5).integers(0, 256, (1200, 1400, 3), dtype=np.uint8)
    pixels = antialiased_resize(image, 1024, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        expected = backend.model.get_image_embeddings(torch.from_numpy(pixels).float())[-1]
    difference = (backend.encode(image).embeddings - expected).abs().max()
    assert difference <= 1e-4 * expected.abs().max()
    assert backend.max_hole_area == 0  # the official SAM2ImagePredictor fills no holes by default


def test_sam2_folder_loads_through_load_model(backend, tmp_path):
    backend.model.save_pretrained(tmp_path / "sam2")
    loaded = load_model(tmp_path / "sam2")
    assert isinstance(loaded, Sam2Backend) and loaded.kind == "sam2" and loaded.name == str(tmp_path / "sam2")
    for name, tensor in backend.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_sam_folder_loads_through_load_model(reduced_model, tmp_path):
    reduced_model.model.save_pretrained(tmp_path / "sam")
    loaded = load_model(tmp_path / "sam")
    assert loaded.kind == "sam"
    for name, tensor in reduced_model.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_model(tmp_path)


def test_folder_with_missing_weights(reduced_model, tmp_path):
    folder = tmp_path / "sam"
    reduced_model.model.config.save_pretrained(folder)
    with pytest.raises(CheckpointError, match=str(folder)):
        load_model(folder)
