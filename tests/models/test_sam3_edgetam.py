"""SAM 3 (transformers' `Sam3TrackerModel`) and EdgeTAM (`EdgeTamModel`) behind `PromptableModel`:
tiny random configs with SAM 3's real geometry (1008 frame, 14-px patches: 72 grid, 288 mask
prompts) refine real masks through `Refiner` and `samrefiner refine`, with points, box and mask
prompts. EdgeTAM's encoder is timm's RepViT: its tests use a random stand-in backbone. Both read
images as their official predictors do (float resize with antialias), checked against an
independent resize; SAM 3 fills small holes of its low-res masks by default, as its official
predictor does, checked against an independent hole filling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
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

from conftest import DATA
from samrefiner import load_model
from samrefiner.io.images import read_image, read_mask
from samrefiner.models.backends import PRETRAINED_BACKENDS
from samrefiner.models.edgetam import EdgeTamBackend
from samrefiner.models.holes import fill_holes
from samrefiner.models.registry import REGISTRY
from samrefiner.models.sam3 import Sam3Backend
from samrefiner.prompts import Geometry, PromptMiner
from samrefiner.refine import Refiner, RefinerConfig
from whole_frame_reference import antialiased_resize, filled_holes

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
                "model_type": "sam3_vit_model",
                "hidden_size": WIDTH,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "global_attn_indexes": [1],
                "window_size": 24,
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
        capsys,
        monkeypatch,
        "refine",
        "--model",
        saved_sam3,
        "--iterations",
        "2",
        "--box-expand-threshold",
        "0.1",
        "--images",
        images,
        "--masks",
        masks,
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    assert code == 0, err
    assert out.startswith("1 images, 1 objects refined") and "0 failed" in out
    written = np.asarray(Image.open(tmp_path / "out" / "dog.png")) > 0
    expected = Refiner(backend, CONFIG).refine(image, coarse)
    np.testing.assert_array_equal(written, expected.masks[0])
    (record,) = json.loads((tmp_path / "out" / "scores.jsonl").read_text().splitlines()[0])["objects"]
    assert record["chosen"] == int(expected.chosen[0])


def test_registry_names_and_model_types():
    assert REGISTRY["sam3"].hf_id == "facebook/sam3" and REGISTRY["edgetam"].hf_id == "yonigozlan/EdgeTAM-hf"
    for model_type in ("sam3_tracker", "sam3_video"):
        assert PRETRAINED_BACKENDS[model_type] is Sam3Backend
    assert PRETRAINED_BACKENDS[EdgeTamConfig.model_type] is EdgeTamBackend


# Larger than the input frame in both directions, so the resize shrinks and antialiasing matters.
NOISE = np.random.default_rng(7).integers(0, 256, (1300, 1500, 3), dtype=np.uint8)


def assert_reads_images_officially(backend, side, mean, std):
    """The embedding of `backend.encode` is the model's embedding of the independently resized image."""
    expected_pixels = torch.from_numpy(antialiased_resize(NOISE, side, mean, std)).float()
    encoding = backend.encode(NOISE)
    with torch.inference_mode():
        expected = backend.model.get_image_embeddings(expected_pixels)[-1]
    scale = expected.abs().max()
    assert (encoding.embeddings - expected).abs().max() <= 1e-4 * scale


def test_sam3_reads_images_as_its_official_predictor(backend):
    assert_reads_images_officially(backend, 1008, [0.5] * 3, [0.5] * 3)


def hand_made_logits() -> torch.Tensor:
    """A 20 x 20 foreground square in a 32 x 32 map with background holes of 1 pixel, 4 pixels that
    touch only diagonally (one 8-connected component) and 9 pixels, and a 3-pixel background notch
    on the image border cut off by foreground in the corner."""
    logits = torch.full((32, 32), -2.0)
    logits[4:24, 4:24] = 3.0
    logits[6, 6] = -1.0  # 1 pixel
    logits[10, 10] = logits[11, 11] = logits[10, 12] = logits[9, 13] = -1.0  # 4 pixels, 8-connected
    logits[15:18, 15:18] = -1.0  # 9 pixels
    logits[0:4, 28:32] = 5.0
    logits[0:3, 31] = -0.5  # 3 pixels on the border
    return logits


def test_hole_filling_on_a_hand_made_mask():
    logits = hand_made_logits()
    filled = fill_holes(logits[None, None], 3)[0, 0]
    changed = filled != logits
    assert changed[6, 6] and changed[0:3, 31].all() and changed.sum() == 1 + 3
    assert (filled[changed] == 10.0).all()  # the diagonal 4 and the 9-pixel hole stay
    torch.testing.assert_close(filled, torch.from_numpy(filled_holes(logits.numpy(), 3)), rtol=0, atol=0)


def test_hole_filling_equals_an_independent_one_on_random_masks():
    generator = torch.Generator().manual_seed(3)
    logits = torch.nn.functional.avg_pool2d(torch.randn(6, 1, 60, 60, generator=generator), 3, 1, 1) + 0.1
    filled = fill_holes(logits, 5)
    expected = np.stack([filled_holes(plane[0], 5) for plane in logits.numpy()])[:, None]
    assert (filled != logits).sum() > 20  # the random maps have small background components
    torch.testing.assert_close(filled, torch.from_numpy(expected), rtol=0, atol=0)


def test_sam3_fills_holes_by_default_and_on_request_does_not(backend, encoding):
    logits = torch.full((1, 1, 288, 288), -3.0)
    logits[..., 50:250, 50:250] = 4.0
    logits[..., 100:110, 100:110] = -2.0  # a 100-pixel hole: filled
    logits[..., 150:170, 150:170] = -2.0  # a 400-pixel hole: kept
    expected = torch.from_numpy(filled_holes(logits[0, 0].numpy(), 256))[None, None]
    size = encoding.original_size
    assert backend.max_hole_area == 256
    upscaled = backend.upscale(logits, encoding)
    torch.testing.assert_close(upscaled, torch.nn.functional.interpolate(expected, size, mode="bilinear"))
    backend.max_hole_area = 0
    try:
        plain = backend.upscale(logits, encoding)
    finally:
        backend.max_hole_area = 256
    torch.testing.assert_close(plain, torch.nn.functional.interpolate(logits, size, mode="bilinear"))


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
        capsys,
        monkeypatch,
        "refine",
        "--model",
        tmp_path / "edgetam",
        "--iterations",
        "2",
        "--box-expand-threshold",
        "0.1",
        "--images",
        image_dir,
        "--masks",
        mask_dir,
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    assert code == 0, err
    written = np.asarray(Image.open(tmp_path / "out" / "dog.png")) > 0
    np.testing.assert_array_equal(written, result.masks[0])


def test_edgetam_reads_images_as_its_official_predictor():
    backend = EdgeTamBackend(tiny_edgetam(), "tiny")
    assert backend.max_hole_area == 0
    assert_reads_images_officially(backend, 1024, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
