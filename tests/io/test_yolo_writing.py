"""YOLO polygon writing: what supervision reads back from a written line is the mask, but for the
seams that join its parts; memory stays linear in the outline's vertices."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from scipy import ndimage
from test_io_yolo import seam_lower_bound

from samrefiner.io.yolo import YoloDataset

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def written_and_read_back(tmp_path: Path, masks: list[np.ndarray]) -> list[np.ndarray]:
    """Write `masks` as one image's label file with YoloDataset.write; read it with supervision."""
    height, width = masks[0].shape
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("val: images\nnames: [a]\n")
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(root / "images" / "x.png")
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / "x.txt").write_text("0 0.1 0.1 0.5 0.1 0.2 0.2\n" * len(masks))
    dataset = YoloDataset(root, tmp_path / "out")
    sample = dataset.load(dataset.refs()[0])
    dataset.write(sample, SimpleNamespace(masks=np.stack(masks)))
    read = sv.DetectionDataset.from_yolo(
        str(root / "images"), str(tmp_path / "out" / "labels"), str(root / "data.yaml"), force_masks=True
    )
    return list(read.annotations[str(root / "images" / "x.png")].mask)


def blobs(seed: int, smooth: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((48, 64)), smooth) > 0.52


def test_masks_with_holes_and_parts_come_back_but_for_the_least_seams(tmp_path):
    masks = [blobs(seed, smooth) for seed in range(12) for smooth in (1.5, 3.0)]
    ring = np.zeros((48, 64), bool)
    ring[5:40, 5:50] = True
    ring[12:30, 14:36] = False  # a hole
    ring[18:22, 20:24] = True  # an island in the hole
    masks = [mask for mask in masks if mask.any()] + [ring]
    for mask, read in zip(masks, written_and_read_back(tmp_path, masks), strict=True):
        parts, bound = seam_lower_bound(mask)
        assert (mask ^ read).sum() <= 1.25 * bound + parts
        if parts == 1:
            np.testing.assert_array_equal(read, mask)  # holes included: no seam crosses background
    assert not (ring & ~read).any() and (read & ~ring).sum() <= 6  # one seam over the 6-pixel gap to the island
    assert not read[24:30, 26:36].any()  # the hole stays a hole


def test_three_parts_in_a_row_are_joined_neighbour_to_neighbour(tmp_path):
    mask = np.zeros((30, 60), bool)
    for left in (40, 2, 21):  # listed out of order: joining in contour order would cross the middle part
        mask[10:20, left : left + 10] = True
    (read,) = written_and_read_back(tmp_path, [mask])
    assert not (mask & ~read).any()
    assert (read & ~mask).sum() <= 2 * 9  # two seams over the two 9-pixel gaps


def test_two_long_parts_are_joined_in_linear_memory(tmp_path):
    """Parts of ~4k and ~5k outline vertices: an N x M distance matrix would take 300 MiB."""
    mask = np.zeros((24, 5_100), bool)
    for top, length in ((2, 4_000), (14, 5_000)):
        mask[top + 1 : top + 5, :length] = True
        mask[top, :length:2] = True  # a jagged edge: a vertex per column
    tracemalloc.start()
    (read,) = written_and_read_back(tmp_path, [mask])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40 * 2**20
    assert not (mask & ~read).any() and (read & ~mask).sum() <= 8
