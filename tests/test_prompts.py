"""Prompt excavation: parity with the reference fixtures, with a literal whole-image version of the
reference's computation, and the properties SPEC section 2 states, on real masks with defects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import DATA, SAM_REF
from samrefiner.evaluation.corrupt import corrupt_mask
from samrefiner.prompts import (
    MASK_SIZE,
    PromptMiner,
    Prompts,
    bounding_box,
    positive_points,
    tight_boxes,
    valid_embedding_size,
)

CASES = json.loads((SAM_REF / "index.json").read_text())


def unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(shape).astype(bool)


def input_size(height: int, width: int) -> tuple[int, int]:
    scale = 1024 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@pytest.mark.parametrize("case", CASES, ids=[case["case"] for case in CASES])
def test_first_iteration_prompts_match_reference(case: dict) -> None:
    image = np.load(SAM_REF / case["image_arrays"])
    expected = np.load(SAM_REF / f"{case['case']}.npz")
    miner = PromptMiner(
        tuple(image["original_size"]),
        tuple(image["input_size"]),
        torch.from_numpy(image["embeddings"].astype(np.float32)),
        box_expand_threshold=case["box_expand_threshold"],
        gamma=case["gamma"],
        strength=case["strength"],
    )
    prompts = miner.mine(unpack(image["coarse_bits"], image["coarse_shape"]))
    np.testing.assert_array_equal(prompts.points, expected["points_orig"])
    np.testing.assert_array_equal(prompts.labels, expected["point_labels"])
    np.testing.assert_array_equal(prompts.boxes, expected["boxes_orig"])
    np.testing.assert_array_equal(prompts.box_expanded, expected["box_expanded"].astype(bool))
    np.testing.assert_allclose(prompts.mask_inputs, expected["mask_inputs"].astype(np.float32), rtol=0, atol=1e-2)


# --- real masks with seeded defects, scaled down so that the whole-image oracle stays cheap ---

SCENES = [
    ("davis2016/JPEGImages/blackswan/00000.jpg", "davis2016/Annotations/blackswan/00000.png", 1),
    ("davis2016/JPEGImages/dog/00010.jpg", "davis2016/Annotations/dog/00010.png", 2),
    ("grabcut/images/banana1.png", "grabcut/gt/banana1.png", 3),
    ("grabcut/images/person1.jpg", "grabcut/gt/person1.png", 4),
]
SCALE = 2  # images and masks are shrunk by this factor


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return load_scenes()


def load_scenes() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, ground truth, flawed mask) for each scene, flawed with samrefiner.evaluation.corrupt's seeded defects."""
    loaded = []
    for image_path, gt_path, seed in SCENES:
        image = Image.open(DATA / image_path).convert("RGB")
        size = (image.width // SCALE, image.height // SCALE)
        image = np.asarray(image.resize(size, Image.BILINEAR))
        gt = np.asarray(Image.open(DATA / gt_path).convert("L").resize(size, Image.NEAREST)) > 128
        flawed = corrupt_mask(image, gt, np.random.default_rng(seed)).mask
        loaded.append((image, gt, flawed))
    return loaded


def object_embeddings(gt: np.ndarray, seed: int) -> torch.Tensor:
    """A (1, 256, 64, 64) embedding where the ground-truth object shares one direction, so CEBox
    sees the parts of the object that the flawed mask misses."""
    rng = np.random.default_rng(seed)
    rows, cols = valid_embedding_size(*gt.shape, 64)
    grid = np.zeros((64, 64), dtype=np.float32)
    grid[:rows, :cols] = np.asarray(Image.fromarray(gt.astype(np.uint8)).resize((cols, rows), Image.BILINEAR))
    direction = rng.standard_normal(256).astype(np.float32)
    noise = rng.standard_normal((256, 64, 64)).astype(np.float32) * 0.15
    return torch.from_numpy(noise + grid[None] * direction[:, None, None] / 4)[None]


def reference_prompts(
    masks: np.ndarray, embeddings: torch.Tensor, threshold: float, gamma: float = 4.0, strength: float = 30.0
) -> Prompts:
    """The reference's computation, literally, on whole images (scipy EDT, torch resizes) with the
    two bug fixes of SPEC section 2: per-mask expanded flag, no negative point instead of (0, 0)."""
    height, width = masks.shape[1:]
    rows, cols = valid_embedding_size(height, width, 64)
    grid = embeddings[:, :, :rows, :cols]
    if threshold > 0:
        pixels = F.interpolate(grid, size=(height, width), mode="bilinear")[0].permute(1, 2, 0)
        pixels = pixels / pixels.norm(dim=-1, keepdim=True)
    points, labels, boxes, expanded, gaussians = [], [], [], [], []
    for mask in masks:
        distances = ndi.distance_transform_edt(mask).astype(np.float32)
        ys, xs = np.nonzero(distances == distances.max())
        ys_all, xs_all = np.nonzero(mask)
        x1, y1, x2, y2 = int(xs_all.min()), int(ys_all.min()), int(xs_all.max()), int(ys_all.max())
        reverse = ndi.distance_transform_edt(~mask).astype(np.float32)
        inside = np.zeros_like(mask)
        inside[y1:y2, x1:x2] = True
        reverse[~inside] = 0
        ny, nx = np.nonzero(reverse == reverse.max())
        has_negative = reverse.max() > 0
        points.append([[xs[0], ys[0]], [nx[0], ny[0]] if has_negative else [0, 0]])
        labels.append([1, 0 if has_negative else -1])
        box, moved = [x1, y1, x2, y2], False
        if threshold > 0:
            small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(rows, cols), mode="nearest")
            query = (grid * small).sum(dim=(-2, -1)) / small.sum()
            similar = (pixels @ (query / query.norm())[0] > 0.5).numpy()
            step_y, step_x = min(0.1 * (y2 - y1), 10), min(0.1 * (x2 - x1), 10)
            tests = [
                (0, int(x1 - step_x), lambda v: 0 < v < x1, lambda v: similar[y1:y2, v:x1]),
                (2, int(x2 + step_x), lambda v: x2 < v < width, lambda v: similar[y1:y2, x2:v]),
                (1, int(y1 - step_y), lambda v: 0 < v < y1, lambda v: similar[v:y1, x1:x2]),
                (3, int(y2 + step_y), lambda v: y2 < v < height, lambda v: similar[y2:v, x1:x2]),
            ]
            for side, value, usable, strip in tests:
                if usable(value) and strip(value).mean() > threshold:
                    box[side], moved = value, True
        boxes.append(box)
        expanded.append(moved)
        gaussian = np.exp(-((distances - distances.max()) ** 2) / max(mask.sum() / gamma, 1))
        gaussians.append(np.where(mask, gaussian, 0).astype(np.float32))
    size = input_size(height, width)
    pad = (0, 1024 - size[1], 0, 1024 - size[0])
    signs = F.interpolate(torch.from_numpy(np.where(masks, 1.0, -1.0)).float()[:, None], size, mode="bilinear")
    signs = F.interpolate(F.pad(signs, pad, value=-1), (256, 256), mode="bilinear")
    gauss = F.interpolate(torch.from_numpy(np.stack(gaussians))[:, None], size, mode="bilinear")
    gauss = F.interpolate(F.pad(gauss, pad, value=0), (256, 256), mode="bilinear")
    amplitude = torch.tensor([1.0 if moved else strength for moved in expanded])[:, None, None, None]
    signs = torch.where(signs > 0, amplitude, -amplitude)
    gauss[gauss <= 0] = 1
    return Prompts(np.array(points), np.array(labels), np.array(boxes), np.array(expanded), (signs * gauss).numpy())


@pytest.mark.parametrize("threshold", [0.0, 0.1])
def test_prompts_equal_whole_image_reference_on_real_masks(scenes, threshold: float) -> None:
    expanded_any = []
    for index, (_, gt, flawed) in enumerate(scenes):
        masks = np.stack([flawed, gt])
        embeddings = object_embeddings(gt, index)
        expected = reference_prompts(masks, embeddings, threshold)
        miner = PromptMiner(gt.shape, input_size(*gt.shape), embeddings, box_expand_threshold=threshold)
        prompts = miner.mine(masks)
        np.testing.assert_array_equal(prompts.points, expected.points)
        np.testing.assert_array_equal(prompts.labels, expected.labels)
        np.testing.assert_array_equal(prompts.boxes, expected.boxes)
        np.testing.assert_array_equal(prompts.box_expanded, expected.box_expanded)
        np.testing.assert_allclose(prompts.mask_inputs, expected.mask_inputs, rtol=0, atol=1e-4)
        expanded_any.extend(prompts.box_expanded)
    if threshold == 0.1:
        assert any(expanded_any) and not all(expanded_any), "the scenes must exercise both outcomes"


def test_points_sit_on_distance_maxima_and_inside_box(scenes) -> None:
    for _, _, flawed in scenes:
        prompts = PromptMiner(flawed.shape, input_size(*flawed.shape)).mine(flawed[None])
        (px, py), (nx, ny) = prompts.points[0]
        inside = ndi.distance_transform_edt(flawed)
        assert flawed[py, px] and inside[py, px] == inside.max()
        x1, y1, x2, y2 = prompts.boxes[0]
        assert (x1, y1, x2, y2) == bounding_box(flawed)
        assert prompts.labels[0].tolist() == [1, 0]
        assert not flawed[ny, nx] and x1 <= nx < x2 and y1 <= ny < y2
        outside = ndi.distance_transform_edt(~flawed)[y1:y2, x1:x2]
        assert outside[ny - y1, nx - x1] == outside.max()


@pytest.mark.parametrize("passes", [1, 3])
def test_elastic_box_never_shrinks_and_moves_only_similar_sides(scenes, passes: int) -> None:
    threshold = 0.1
    for index, (_, gt, flawed) in enumerate(scenes):
        embeddings = object_embeddings(gt, index)
        miner = PromptMiner(
            gt.shape, input_size(*gt.shape), embeddings, box_expand_threshold=threshold, box_expand_passes=passes
        )
        prompts = miner.mine(flawed[None])
        tight = np.array(bounding_box(flawed))
        box = prompts.boxes[0]
        assert box[0] <= tight[0] and box[1] <= tight[1] and box[2] >= tight[2] and box[3] >= tight[3]
        assert prompts.box_expanded[0] == (not np.array_equal(box, tight))
        if passes == 1:
            similar = similarity_map(embeddings, flawed)
            x1, y1, x2, y2 = tight
            strips = [
                (box[0] != x1, similar[y1:y2, box[0] : x1] if box[0] != x1 else None),
                (box[2] != x2, similar[y1:y2, x2 : box[2]] if box[2] != x2 else None),
                (box[1] != y1, similar[box[1] : y1, x1:x2] if box[1] != y1 else None),
                (box[3] != y2, similar[y2 : box[3], x1:x2] if box[3] != y2 else None),
            ]
            for moved, strip in strips:
                if moved:
                    assert strip.mean() > threshold


def similarity_map(embeddings: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """Cosine similarity > 0.5 of each upsampled pixel embedding with the mask's mean embedding."""
    rows, cols = valid_embedding_size(*mask.shape, 64)
    grid = embeddings[:, :, :rows, :cols]
    pixels = F.interpolate(grid, size=mask.shape, mode="bilinear")[0].permute(1, 2, 0)
    small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(rows, cols), mode="nearest")
    query = ((grid * small).sum(dim=(-2, -1)) / small.sum())[0]
    return ((pixels @ query) / (pixels.norm(dim=-1) * query.norm()) > 0.5).numpy()


def test_mask_prompt_peaks_at_positive_point_and_is_negative_outside(scenes) -> None:
    strength = 30.0
    for _, _, flawed in scenes:
        size = input_size(*flawed.shape)
        prompts = PromptMiner(flawed.shape, size, strength=strength).mine(flawed[None])
        prompt = prompts.mask_inputs[0, 0]
        x, y = prompts.points[0, 0]
        cell_y, cell_x = int(y * size[0] / flawed.shape[0] / 4), int(x * size[1] / flawed.shape[1] / 4)
        assert prompt.max() <= strength
        assert prompt[cell_y, cell_x] > 0.99 * strength
        # a 256-cell reads input-frame pixels 4a+1, 4a+2, each reading two original pixels per axis:
        # cells whose 3 x 3 original-pixel neighbourhood (scaled) holds no mask are exactly -strength
        near = ndi.binary_dilation(flawed, iterations=2 * flawed.shape[0] // size[0] + 4)
        cells = F.interpolate(torch.from_numpy(near)[None, None].float(), size, mode="nearest")
        cells = F.max_pool2d(F.pad(cells, (0, 1024 - size[1], 0, 1024 - size[0])), 4)[0, 0].numpy() > 0
        assert np.all(prompt[~cells] == -strength)
        assert (~cells).sum() > 0.3 * cells.size


def test_no_negative_point_when_the_box_holds_no_background() -> None:
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:20, 5:30] = True  # a filled rectangle: the box's end-exclusive slice is all mask
    mask[2, 45] = False
    prompts = PromptMiner(mask.shape, input_size(*mask.shape)).mine(mask[None])
    assert prompts.labels[0].tolist() == [1, -1]
    assert prompts.points[0, 1].tolist() == [0, 0]


def test_expanded_flag_weakens_only_its_own_mask_prompt() -> None:
    height, width = 120, 160
    gt = np.zeros((height, width), dtype=bool)
    gt[20:100, 20:80] = True
    embeddings = object_embeddings(gt, 0)
    partial = np.zeros_like(gt)
    partial[40:80, 30:70] = True  # inside the object: its box should grow
    elsewhere = np.zeros_like(gt)
    elsewhere[30:60, 110:150] = True  # outside the object: its box should stay
    miner = PromptMiner(gt.shape, input_size(height, width), embeddings, box_expand_threshold=0.1)
    prompts = miner.mine(np.stack([partial, elsewhere]))
    assert prompts.box_expanded.tolist() == [True, False]
    assert np.abs(prompts.mask_inputs[0]).max() <= 1.0
    assert prompts.mask_inputs[1].min() == -30.0 and prompts.mask_inputs[1].max() > 29.0


def test_point_strategies() -> None:
    mask = np.zeros((60, 80), dtype=bool)
    mask[10:50, 10:30] = True
    mask[45:50, 30:70] = True  # an L shape: the box centre lies outside the mask
    size = input_size(*mask.shape)
    center = PromptMiner(mask.shape, size, point_strategy="box_center").mine(mask[None])
    assert center.points[0, 0].tolist() == [(10 + 69) // 2, (10 + 49) // 2]
    draws = [
        PromptMiner(mask.shape, size, point_strategy="random", rng=np.random.default_rng(seed)).mine(mask[None])
        for seed in (0, 0, 1, 2)
    ]
    points = [tuple(draw.points[0, 0]) for draw in draws]
    assert points[0] == points[1] and len(set(points)) > 1
    assert all(mask[y, x] for x, y in points)
    distance = PromptMiner(mask.shape, size).mine(mask[None])
    assert all(np.array_equal(draw.labels, distance.labels) for draw in [center, *draws])
    with pytest.raises(ValueError, match="point_strategy"):
        PromptMiner(mask.shape, size, point_strategy="centroid")


def test_empty_mask_gets_padding_and_background_prompt() -> None:
    masks = np.zeros((2, 30, 40), dtype=bool)
    masks[1, 5:15, 5:25] = True
    prompts = PromptMiner(masks.shape[1:], input_size(30, 40), use_negative_point=False).mine(masks)
    assert prompts.points.shape == (2, 1, 2) and prompts.labels.tolist() == [[-1], [1]]
    assert prompts.boxes[0].tolist() == [0, 0, 0, 0] and prompts.boxes[1].tolist() == [5, 5, 24, 14]
    assert prompts.mask_inputs.shape == (2, 1, MASK_SIZE, MASK_SIZE)
    assert np.all(prompts.mask_inputs[0] == -30.0)


def test_mask_covering_the_whole_image() -> None:
    mask = np.ones((1, 20, 30), dtype=bool)
    prompts = PromptMiner(mask.shape[1:], input_size(20, 30)).mine(mask)
    assert prompts.labels.tolist() == [[1, -1]]
    assert prompts.boxes.tolist() == [[0, 0, 29, 19]]


def test_helpers_for_single_prompt_types(scenes) -> None:
    masks = np.stack([flawed for _, _, flawed in scenes[:2]] + [np.zeros_like(scenes[0][2])])
    mined = PromptMiner(masks.shape[1:], input_size(*masks.shape[1:])).mine(masks[:2])
    np.testing.assert_array_equal(positive_points(masks)[:2], mined.points[:, 0])
    np.testing.assert_array_equal(tight_boxes(masks)[:2], mined.boxes)
    assert positive_points(masks)[2].tolist() == [0, 0] and tight_boxes(masks)[2].tolist() == [0, 0, 0, 0]
