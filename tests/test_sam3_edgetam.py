"""SAM 3 (transformers' `Sam3TrackerModel`) and EdgeTAM (`EdgeTamModel`) behind `PromptableModel`:
tiny random configs with SAM 3's real geometry (1008 frame, 14-px patches: 72 grid, 288 mask
prompts) refine real masks through `Refiner` and `samrefiner refine`, with points, box and mask
prompts. EdgeTAM's encoder is timm's RepViT: its tests run only where timm is installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA
from PIL import Image
from test_refine_cli import run_cli
from transformers import (
    AutoConfig,
    AutoModel,
    EdgeTamConfig,
    PreTrainedConfig,
    PreTrainedModel,
    Sam3TrackerConfig,
    Sam3TrackerModel,
)
from transformers.modeling_outputs import BaseModelOutput

from samrefiner import load_model
from samrefiner.io.images import read_image, read_mask
from samrefiner.models import PRETRAINED_BACKENDS
from samrefiner.models.registry import REGISTRY
from samrefiner.models.sam3 import Sam3Backend, processor_pixels
from samrefiner.prompts import Geometry, PromptMiner
from samrefiner.refine import Refiner, RefinerConfig

DAVIS = DATA / "davis2016"
FRAME = "dog/00010"
CONFIG = RefinerConfig(iterations=2, box_expand_threshold=0.1)
WIDTH = 32  # hidden size of every part of the tiny models
TINY_DECODER = {"hidden_size": WIDTH, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": WIDTH}


def tiny_sam3() -> Sam3TrackerModel:
    """A random SAM 3 tracker: 2-layer ViT (width 32, 14-px patches at 1008: a 72 x 72 grid)."""
    config = Sam3TrackerConfig(
        vision_config={
            "model_type": "sam3_vision_model",
            "fpn_hidden_size": WIDTH,
            "backbone_config": {
                "model_type": "sam3_vit_model", "hidden_size": WIDTH, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1], "window_size": 24,
            },
        },
        prompt_encoder_config={"hidden_size": WIDTH},
        mask_decoder_config=TINY_DECODER,
    )
    torch.manual_seed(0)
    return Sam3TrackerModel(config).eval()


@pytest.fixture(scope="module")
def saved_sam3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam3_tiny")
    tiny_sam3().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(saved_sam3) -> Sam3Backend:
    model = load_model(str(saved_sam3))
    assert isinstance(model, Sam3Backend)
    return model


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray]:
    image = read_image(DAVIS / "JPEGImages" / f"{FRAME}.jpg")
    return image, read_mask(DAVIS / "Annotations" / f"{FRAME}.png")[None]


@pytest.fixture(scope="module")
def encoding(backend, frame):
    return backend.encode(frame[0])


def test_geometry_is_read_from_the_config(backend, encoding):
    assert (backend.image_size, backend.embedding_size, backend.mask_input_size) == (1008, 72, 288)
    assert encoding.input_size == (1008, 1008)  # resized to the whole frame, as the processor does
    assert tuple(encoding.embeddings.shape[-2:]) == (72, 72)


def test_refiner_uses_the_models_geometry_and_all_prompts(backend, frame, encoding):
    _, coarse = frame
    result = Refiner(backend, CONFIG).refine_encoded(encoding, coarse)
    assert result.prompts.mask_inputs.shape == (1, 1, 288, 288)
    assert result.prompts.labels.tolist() == [[1, 0]]
    assert result.candidate_scores.shape == (1, 3) and result.masks.shape == coarse.shape
    assert not result.empty_output.any() and result.masks.any()
    # the first pass by hand: points, box and mask prompt mined in SAM 3's geometry, decoded, best upscaled
    geometry = Geometry(1008, 72, 288)
    prompts = PromptMiner(
        encoding.original_size, encoding.input_size, encoding.embeddings, box_expand_threshold=0.1, geometry=geometry
    ).mine(coarse)
    np.testing.assert_array_equal(result.prompts.mask_inputs, prompts.mask_inputs)
    decoded = backend.decode(
        encoding, prompts.points, prompts.labels, prompts.boxes, torch.from_numpy(prompts.mask_inputs)
    )
    assert decoded.low_res_logits.shape == (1, 3, 288, 288)
    best = int(decoded.iou_scores[0].argmax())
    first = (backend.upscale(decoded.low_res_logits[:, best : best + 1], encoding)[:, 0] > 0).numpy()
    one_pass = Refiner(backend, RefinerConfig(iterations=1, box_expand_threshold=0.1)).refine_encoded(encoding, coarse)
    np.testing.assert_array_equal(one_pass.masks, first)


@pytest.mark.parametrize("prompt", ["points", "box", "mask"])
def test_each_prompt_alone_refines(backend, frame, encoding, prompt):
    _, coarse = frame
    config = RefinerConfig(
        iterations=1, use_points=prompt == "points", use_box=prompt == "box", use_mask=prompt == "mask"
    )
    result = Refiner(backend, config).refine_encoded(encoding, coarse)
    assert result.masks.shape == coarse.shape and np.isfinite(result.scores).all()


def test_the_mask_prompt_reaches_the_decoder(backend, frame, encoding):
    _, coarse = frame
    prompts = PromptMiner(encoding.original_size, encoding.input_size, geometry=Geometry(1008, 72, 288)).mine(coarse)
    masks = torch.from_numpy(prompts.mask_inputs)
    with_mask = backend.decode(encoding, prompts.points, prompts.labels, prompts.boxes, masks)
    flipped = backend.decode(encoding, prompts.points, prompts.labels, prompts.boxes, -masks)
    without = backend.decode(encoding, prompts.points, prompts.labels, prompts.boxes, None)
    scale = with_mask.low_res_logits.abs().max()  # random weights: logits are small
    assert (with_mask.low_res_logits - flipped.low_res_logits).abs().max() > 0.1 * scale
    assert (with_mask.low_res_logits - without.low_res_logits).abs().max() > 0.1 * scale


def test_a_mask_prompt_of_another_geometry_is_refused(backend, encoding):
    with pytest.raises(ValueError, match="288, 288"):
        backend.decode(encoding, None, None, np.array([[10.0, 10.0, 50.0, 50.0]]), torch.zeros(1, 1, 256, 256))


def one_image_dataset(folder, image, coarse):
    """`folder/images/dog.png` and its one coarse mask `folder/masks/dog.png` (a --masks dataset)."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(), masks.mkdir()
    Image.fromarray(image).save(images / "dog.png")
    Image.fromarray(coarse[0].astype(np.uint8) * 255).save(masks / "dog.png")
    return images, masks


def test_cli_refines_with_a_sam3_folder(saved_sam3, backend, frame, tmp_path, capsys, monkeypatch):
    image, coarse = frame
    images, masks = one_image_dataset(tmp_path, image, coarse)
    code, out, err = run_cli(
        capsys, monkeypatch, "refine", "--model", saved_sam3, "--iterations", "2", "--box-expand-threshold", "0.1",
        "--images", images, "--masks", masks, "--out", tmp_path / "out", "--no-progress",
    )
    assert code == 0, err
    assert out.startswith("1 images, 1 objects refined") and "0 failed" in out
    written = np.asarray(Image.open(tmp_path / "out" / "dog.png")) > 0
    expected = Refiner(backend, CONFIG).refine(image, coarse)
    np.testing.assert_array_equal(written, expected.masks[0])
    (record,) = json.loads((tmp_path / "out" / "scores.jsonl").read_text().splitlines()[0])["objects"]
    assert record["chosen"] == int(expected.chosen[0])


def test_preprocessing_equals_the_transformers_processor(frame):
    pytest.importorskip("torchvision", reason="transformers' SAM 3 / SAM 2 image processors need torchvision")
    from transformers import Sam2ImageProcessor
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

    image = frame[0]
    for processor, side, mean, std in (
        (Sam3ImageProcessor(), 1008, [0.5] * 3, [0.5] * 3),
        (Sam2ImageProcessor(), 1024, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ):
        expected = processor(images=image, return_tensors="pt")["pixel_values"]
        ours = processor_pixels(image, side, np.float32(mean) * 255, np.float32(std) * 255)
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_registry_names_and_model_types():
    assert REGISTRY["sam3"].hf_id == "facebook/sam3" and REGISTRY["edgetam"].hf_id == "yonigozlan/EdgeTAM-hf"
    for model_type in ("sam3_tracker", "sam3_video"):
        assert PRETRAINED_BACKENDS[model_type] == "samrefiner.models.sam3"
    assert PRETRAINED_BACKENDS[EdgeTamConfig.model_type] == "samrefiner.models.edgetam"


class PyramidConfig(PreTrainedConfig):
    """A stand-in for EdgeTAM's timm RepViT backbone (timm needs torchvision, which we may not
    install): four random conv stages at strides 4, 8, 16, 32, the feature pyramid EdgeTAM's neck
    takes. Everything past the backbone is transformers' EdgeTAM."""

    model_type = "samrefiner_test_pyramid"

    def __init__(self, channels: tuple[int, ...] = (8, 16, 24, 32), **kwargs) -> None:
        self.channels = list(channels)
        super().__init__(**kwargs)


class Pyramid(PreTrainedModel):
    config_class = PyramidConfig
    base_model_prefix = "pyramid"

    def __init__(self, config: PyramidConfig) -> None:
        super().__init__(config)
        widths, strides = [3, *config.channels], (4, 2, 2, 2)
        self.stages = torch.nn.ModuleList(
            torch.nn.Conv2d(inputs, outputs, stride, stride=stride)
            for inputs, outputs, stride in zip(widths, widths[1:], strides)
        )
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutput:
        features, hidden = [], pixel_values
        for stage in self.stages:
            hidden = torch.relu(stage(hidden))
            features.append(hidden)
        return BaseModelOutput(last_hidden_state=features)


AutoConfig.register(PyramidConfig.model_type, PyramidConfig)
AutoModel.register(PyramidConfig, Pyramid)


def tiny_edgetam():
    """A random EdgeTAM (transformers' prompt encoder, mask decoder and FPN neck) on the stand-in backbone."""
    from transformers import EdgeTamModel

    backbone = PyramidConfig()
    config = EdgeTamConfig(
        prompt_encoder_config={"hidden_size": WIDTH},
        mask_decoder_config=TINY_DECODER,
        vision_config={
            "fpn_hidden_size": WIDTH,
            "backbone_config": backbone.to_dict(),
            "backbone_channel_list": backbone.channels[::-1],
        },
    )
    torch.manual_seed(0)
    return EdgeTamModel(config).eval()


def test_edgetam_folder_refines_with_every_prompt(frame, tmp_path, capsys, monkeypatch):
    model = tiny_edgetam()
    model.save_pretrained(tmp_path / "edgetam")
    backend = load_model(str(tmp_path / "edgetam"))
    assert backend.kind == "edgetam" and (backend.image_size, backend.mask_input_size) == (1024, 256)
    image, coarse = frame
    result = Refiner(backend, CONFIG).refine(image, coarse)
    assert result.prompts.mask_inputs.shape == (1, 1, 256, 256) and result.masks.any()
    encoding = backend.encode(image)
    prompts = result.prompts
    masks = torch.from_numpy(prompts.mask_inputs)
    with_mask = backend.decode(encoding, prompts.points, prompts.labels, prompts.boxes, masks)
    flipped = backend.decode(encoding, prompts.points, prompts.labels, prompts.boxes, -masks)
    assert (with_mask.low_res_logits - flipped.low_res_logits).abs().max() > 0.1 * with_mask.low_res_logits.abs().max()
    image_dir, mask_dir = one_image_dataset(tmp_path, image, coarse)
    code, out, err = run_cli(
        capsys, monkeypatch, "refine", "--model", tmp_path / "edgetam", "--iterations", "2",
        "--box-expand-threshold", "0.1", "--images", image_dir, "--masks", mask_dir, "--out", tmp_path / "out",
        "--no-progress",
    )
    assert code == 0, err
    written = np.asarray(Image.open(tmp_path / "out" / "dog.png")) > 0
    np.testing.assert_array_equal(written, result.masks[0])
