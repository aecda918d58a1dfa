"""The prompt geometry belongs to the model: the crop-wise miner equals the whole-image prompts of
`prompt_reference` (tests/) for SAM's geometry and for others (LiteMedSAM's 256 frame, SAM 3's
1008 frame with a 72 grid and 288 mask prompts), on real masks with seeded defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_reference import reference_prompts
from samrefiner.prompts import (
    Geometry,
    PromptMiner,
    SimilarityField,
    valid_embedding_size,
)
from test_prompts import load_scenes

SAM = Geometry(1024, 64, 256)
LITE_MEDSAM = Geometry(256, 64, 256)
SAM3 = Geometry(1008, 72, 288)
# (geometry, whether the model keeps the aspect ratio: else it resizes to the whole frame)
GEOMETRIES = [(SAM, True), (LITE_MEDSAM, True), (SAM3, False), (SAM, False)]
IDS = ["sam", "lite_medsam", "sam3", "sam2"]


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, flawed mask) per scene; plus the lowest rows of the dog moved to the image's
    bottom (the mask-prompt cells there sit next to the padding)."""
    loaded = [(gt, flawed) for _, gt, flawed in load_scenes()]
    gt, flawed = loaded[1]
    shift = gt.shape[0] - 1 - int(np.nonzero(gt.any(axis=1))[0].max())
    band = np.zeros_like(gt)
    band[-12:] = True
    loaded.append((np.roll(gt, shift, axis=0) & band, np.roll(flawed, shift, axis=0) & band))
    return loaded


def input_size(shape: tuple[int, int], geometry: Geometry, keeps_aspect: bool) -> tuple[int, int]:
    if not keeps_aspect:
        return geometry.image_size, geometry.image_size
    scale = geometry.image_size / max(shape)
    return int(shape[0] * scale + 0.5), int(shape[1] * scale + 0.5)


def object_embeddings(gt: np.ndarray, size: tuple[int, int], geometry: Geometry, seed: int) -> torch.Tensor:
    """A (1, 256, E, E) embedding where the ground-truth object shares one direction (CEBox sees the
    parts of the object that the flawed mask misses)."""
    rng = np.random.default_rng(seed)
    side = geometry.embedding_size
    rows, cols = valid_embedding_size(*gt.shape, side, size, geometry.image_size)
    grid = np.zeros((side, side), dtype=np.float32)
    grid[:rows, :cols] = np.asarray(Image.fromarray(gt.astype(np.uint8)).resize((cols, rows), Image.BILINEAR))
    direction = rng.standard_normal(256).astype(np.float32)
    noise = rng.standard_normal((256, side, side)).astype(np.float32) * 0.15
    return torch.from_numpy(noise + grid[None] * direction[:, None, None] / 4)[None]


@pytest.mark.parametrize(("geometry", "keeps_aspect"), GEOMETRIES, ids=IDS)
@pytest.mark.parametrize("threshold", [0.0, 0.1])
def test_miner_equals_whole_image_prompts(scenes, geometry: Geometry, keeps_aspect: bool, threshold: float) -> None:
    expanded_any = []
    for index, (gt, flawed) in enumerate(scenes):
        masks = np.stack([flawed, gt])
        size = input_size(gt.shape, geometry, keeps_aspect)
        embeddings = object_embeddings(gt, size, geometry, index)
        expected = reference_prompts(masks, size, embeddings, geometry, threshold=threshold)
        miner = PromptMiner(gt.shape, size, embeddings, box_expand_threshold=threshold, geometry=geometry)
        prompts = miner.mine(masks)
        for got, want in zip(prompts.points, expected.points):  # per object
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(prompts.labels, expected.labels)
        np.testing.assert_array_equal(prompts.boxes, expected.boxes)
        np.testing.assert_array_equal(prompts.box_expanded, expected.box_expanded)
        side = geometry.mask_input_size
        assert prompts.mask_inputs.shape == (2, 1, side, side)
        for got, want in zip(prompts.mask_inputs, expected.mask_inputs):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
            assert (got > 0).sum() == (want > 0).sum() > 0
        expanded_any.extend(prompts.box_expanded)
    if threshold > 0 and keeps_aspect:
        assert any(expanded_any) and not all(expanded_any), "the scenes must exercise both outcomes"


def test_object_at_the_bottom_edge_gets_its_mask_prompt(scenes) -> None:
    """Mask-grid cells next to the padding: the object's cells are positive (the grid window of the
    object reaches them), for every geometry."""
    gt = scenes[-1][0]
    assert gt[-1].any()
    for geometry, keeps_aspect in GEOMETRIES:
        size = input_size(gt.shape, geometry, keeps_aspect)
        prompt = PromptMiner(gt.shape, size, geometry=geometry).mine(gt[None]).mask_inputs[0, 0]
        rows = np.nonzero((prompt > 0).any(axis=1))[0]
        last_cell = int((size[0] - 1) * geometry.mask_input_size / geometry.image_size)
        assert rows.size and rows.max() >= last_cell - 1, (geometry, rows, last_cell)


def test_similarity_field_refuses_an_embedding_of_another_grid() -> None:
    with pytest.raises(ValueError, match="embedding grid is 72 x 72"):
        SimilarityField(torch.zeros(1, 8, 64, 64), (100, 120), (1008, 1008), SAM3)


def test_valid_embedding_grid_follows_the_input_frame() -> None:
    assert valid_embedding_size(480, 854, 72, (1008, 1008), 1008) == (72, 72)  # resized to the whole frame
    assert valid_embedding_size(480, 854, 64, (144, 256), 256) == (35, 64)  # aspect kept: the reference's rule
    assert valid_embedding_size(854, 480, 64, (1024, 576), 1024) == (64, 35)
