"""The crop-wise mask prompt (`samrefiner.mask_prompt`) against its readable twin, the whole-image
torch resizes of `prompt_reference`: signs equal exactly, values within 1e-4, for upsampled and
downsampled (high-resolution) images, clean and speckled masks, and edges where the mask share of a
cell is exactly 1/2 (there the sign is float rounding's, computed in torch's order)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi

from conftest import DATA
from prompt_reference import mask_prompts
from samrefiner import mask_prompt
from samrefiner.prompts import Geometry, PromptMiner

SAM, LITE_MEDSAM, SAM3 = Geometry(1024, 64, 256), Geometry(256, 64, 256), Geometry(1008, 72, 288)


def input_size(shape: tuple[int, int], geometry: Geometry) -> tuple[int, int]:
    scale = geometry.image_size / max(shape)
    return int(shape[0] * scale + 0.5), int(shape[1] * scale + 0.5)


def blobs(shape: tuple[int, int], seed: int, speckle: float) -> np.ndarray:
    """A few discs, with a share `speckle` of pixels flipped at random (the noisy outputs of a
    random-weight model)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(3):
        y, x, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(5, max(shape) // 4)
        mask |= (rows - y) ** 2 + (cols - x) ** 2 < r * r
    return mask ^ (rng.random(shape) < speckle)


def assert_matches_reference(masks: np.ndarray, geometry: Geometry, expanded: list[bool]) -> None:
    size = input_size(masks.shape[1:], geometry)
    miner = PromptMiner(masks.shape[1:], size, use_negative_point=False, geometry=geometry)
    got = miner.mine(masks).mask_inputs
    want = mask_prompts(masks, np.zeros(len(masks), bool), size, geometry)
    for index, (mine, theirs) in enumerate(zip(got, want)):  # per object
        np.testing.assert_array_equal(mine > 0, theirs > 0, err_msg=f"object {index}: sign")
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-4, err_msg=f"object {index}")
    assert not any(expanded)


@pytest.mark.parametrize(
    ("shape", "geometry"),
    [((480, 640), SAM), ((2328, 1746), SAM), ((300, 500), LITE_MEDSAM), ((350, 420), SAM3)],
    ids=["coco-sam", "high-resolution-sam", "lite_medsam", "sam3"],
)
@pytest.mark.parametrize("speckle", [0.0, 0.2])
def test_mask_prompt_equals_whole_image_resizes(shape, geometry: Geometry, speckle: float) -> None:
    masks = np.stack([blobs(shape, seed, speckle) for seed in range(2)])
    assert_matches_reference(masks, geometry, [False, False])


def test_cells_at_exactly_half_take_torch_signs(monkeypatch) -> None:
    """512 -> 1024 -> 256: a cell reads original rows 2a, 2a+1 with total weights 1/2 each, so a
    mask edge between them gives S = 0 exactly (not positive) in torch."""
    calls = []
    original = mask_prompt._torch_order_signs
    monkeypatch.setattr(mask_prompt, "_torch_order_signs", lambda *args: calls.append(1) or original(*args))
    mask = np.zeros((1, 512, 512), dtype=bool)
    mask[0, 101:301, 57:201] = True  # edges between pixels 2a and 2a+1 on every side
    mask[0, 400:480, 300:420] = ndi.binary_dilation(np.eye(80, 120, dtype=bool), iterations=3)
    assert_matches_reference(mask, SAM, [False])
    assert calls, "the exact-half cells must go through torch's order"


def test_reference_does_not_import_the_miner() -> None:
    """The twin is independent: a change to the miner's rules cannot leak into it."""
    tree = ast.parse((Path(__file__).parent / "prompt_reference.py").read_text())
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in modules if name and name.startswith("samrefiner")]


def test_distances_are_correctly_rounded_in_any_thread() -> None:
    """OpenCV's float32 distances can be one ulp off on a crop, differently in another thread; the
    miner's distances are the correctly rounded ones (scipy's, in float32) in every thread."""
    from concurrent.futures import ThreadPoolExecutor

    from samrefiner.distances import ExactDistances
    from samrefiner.io.labelmaps import read_label_map
    from samrefiner.prompts import bounding_box
    from samrefiner.regions import split_then_merge

    def distances_to_zero(crop: np.ndarray) -> np.ndarray:
        return ExactDistances(crop).exact()

    label_map, _ = read_label_map(DATA / "coco_stuff" / "pngs" / "3.png")
    masks = [mask for _, mask in split_then_merge(label_map)][:3]  # raw OpenCV is off on crops of two
    with ThreadPoolExecutor(1) as pool:
        for mask in masks:
            x1, y1, x2, y2 = bounding_box(mask)
            crop = mask[max(y1 - 1, 0) : y2 + 2, max(x1 - 1, 0) : x2 + 2]  # a strided view, as mined
            want = ndi.distance_transform_edt(crop).astype(np.float32)
            np.testing.assert_array_equal(distances_to_zero(crop), want)
            np.testing.assert_array_equal(pool.submit(distances_to_zero, crop).result(), want)


def test_an_object_no_cell_reads_gets_an_all_background_prompt() -> None:
    """A one-row sliver between the rows that the grid's cells read (1024-wide input, downscaled
    rows): the reference's resizes never see it, so its prompt is background everywhere."""
    masks = np.zeros((1, 243, 697), bool)
    masks[0, 73, 682:697] = True
    assert_matches_reference(masks, SAM, [False])
    assert (PromptMiner((243, 697), (357, 1024)).mine(masks).mask_inputs == -30.0).all()
