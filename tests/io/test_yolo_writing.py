"""YOLO polygon writing: what supervision reads back from a written line is the mask, but for the
seams that join its parts; memory stays linear in the outline's vertices."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import supervision as sv
from PIL import Image
from scipy import ndimage
from test_io_yolo import best_polygon_iou, iou, seam_lower_bound

from samrefiner.io.yolo import YoloDataset
from samrefiner.io.yolo_polygons import _worth_joining, background_on_lines

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def written_and_read_back(tmp_path: Path, masks: list[np.ndarray]) -> tuple[list[np.ndarray], dict]:
    """Write `masks` as one image's label file with YoloDataset.write; read it with supervision.
    Returns the masks read and the figures the write reports (polygons.json's)."""
    height, width = masks[0].shape
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("val: images\nnames: [a]\n")
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(root / "images" / "x.png")
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / "x.txt").write_text("0 0.1 0.1 0.5 0.1 0.2 0.2\n" * len(masks))
    dataset = YoloDataset(root, tmp_path / "out")
    sample = dataset.load(dataset.refs()[0])
    report = dataset.write(sample, SimpleNamespace(masks=np.stack(masks)))
    read = sv.DetectionDataset.from_yolo(
        str(root / "images"), str(tmp_path / "out" / "labels"), str(root / "data.yaml"), force_masks=True
    )
    return list(read.annotations[str(root / "images" / "x.png")].mask), report["polygons"]


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
    for mask, read in zip(masks, written_and_read_back(tmp_path, masks)[0], strict=True):
        parts, bound = seam_lower_bound(mask)
        assert (mask ^ read).sum() <= bound + parts  # at most the least seams (+ 1 a part: they end on vertices)
        if parts <= 8:  # best_polygon_iou, which the LiteMedSAM test trusts, bounds what a polygon reads back
            assert iou(read, mask) <= best_polygon_iou(mask)
        if parts == 1:
            np.testing.assert_array_equal(read, mask)  # holes included: no seam crosses background
    assert not (ring & ~read).any() and (read & ~ring).sum() <= 6  # one seam over the 6-pixel gap to the island
    assert not read[24:30, 26:36].any()  # the hole stays a hole


def test_three_parts_in_a_row_are_joined_neighbour_to_neighbour(tmp_path):
    mask = np.zeros((30, 60), bool)
    for left in (40, 2, 21):  # listed out of order: joining in contour order would cross the middle part
        mask[10:20, left : left + 10] = True
    (read,), _ = written_and_read_back(tmp_path, [mask])
    assert not (mask & ~read).any()
    assert (read & ~mask).sum() <= 2 * 9  # two seams over the two 9-pixel gaps


def test_seams_are_chosen_by_the_pixels_they_paint_not_their_length(tmp_path):
    """Three 6 x 6 parts: A-B 8 pixels apart in a row (7 painted), B-C 8.06 apart (7 painted), A-C
    9.9 apart on the diagonal (6 painted: an 8-connected line paints one pixel per step along its
    longer axis). The shortest seams (A-B, B-C) paint 14 pixels, the cheapest (A-C, A-B) 13."""
    mask = np.zeros((50, 50), bool)
    mask[15:21, 15:21] = True  # A: x, y 15-20
    mask[27:33, 27:33] = True  # C: (27, 27) is 7 steps down and right of A's corner (20, 20)
    mask[14:20, 28:34] = True  # B: (28, 19) is 8 steps right of A's (20, 19)
    (read,), _ = written_and_read_back(tmp_path, [mask])
    assert not (mask & ~read).any()
    assert (read & ~mask).sum() == seam_lower_bound(mask)[1] == 13


def test_a_far_branch_of_parts_worth_less_than_its_seams_is_left_out_whole(tmp_path):
    """Three 4-pixel specks, 1 pixel apart from each other, 75 pixels from a 20 x 20 square: each
    speck is worth its own 1-pixel seam, but the three (12 pixels) are not worth the 75-pixel seam
    that joins them to the square (IoU 400 / 412 = 0.971 without them, 412 / 489 = 0.843 with)."""
    mask = np.zeros((40, 140), bool)
    mask[10:30, 5:25] = True
    for left in (100, 103, 106):
        mask[18:20, left : left + 2] = True
    (read,), report = written_and_read_back(tmp_path, [mask])
    square = np.zeros_like(mask)
    square[10:30, 5:25] = True
    np.testing.assert_array_equal(read, square)
    assert (report["added"], report["lost"]) == (0, 12)


def test_a_part_that_raises_the_iou_is_kept_though_its_seam_paints_more_pixels(tmp_path):
    """A 37-pixel part whose seam paints 38: kept, IoU 937 / 975 = 0.9610; left out, 900 / 937 =
    0.9605. The parts kept are those of the highest IoU, not of the fewest pixels changed."""
    mask = np.zeros((40, 90), bool)
    mask[0:30, 0:30] = True
    mask[24:30, 68:74] = True
    mask[29, 74] = True
    (read,), report = written_and_read_back(tmp_path, [mask])
    assert not (mask & ~read).any()
    assert (read & ~mask).sum() == 38 and not (read & ~mask)[:, :30].any() and not (read & ~mask)[:, 68:].any()
    assert (report["added"], report["lost"]) == (38, 0)


def test_an_island_left_out_of_a_hole_leaves_the_hole_a_hole(tmp_path):
    """A 1-pixel island 5 pixels inside a hole is not worth its seam; the hole's outline stays."""
    mask = np.zeros((60, 60), bool)
    mask[5:45, 5:45] = True
    mask[15:35, 15:35] = False
    mask[20, 20] = True
    (read,), report = written_and_read_back(tmp_path, [mask])
    expected = mask.copy()
    expected[20, 20] = False
    np.testing.assert_array_equal(read, expected)
    assert (report["added"], report["lost"]) == (0, 1)


def test_a_holes_outline_is_never_left_out_even_when_its_seam_costs_pixels():
    """The rule's guard, on the tree itself: a hole brings no pixels, so a seam to it that cost any
    (a seam across a notch of its part) would leave it out, and the hole would be filled."""
    mask = np.zeros((30, 30), bool)
    mask[2:22, 2:22] = True
    mask[8:14, 8:14] = False
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outer = hierarchy[0][:, 3] < 0
    assert outer.tolist() == [True, False]
    outlines = [contour.reshape(-1, 2).astype(np.int64) for contour in contours]
    assert _worth_joining(outlines, outer, [(0, 0, 1, 0)], [5], mask) == [0, 1]


def test_two_long_parts_are_joined_in_linear_memory(tmp_path):
    """Parts of ~4k and ~5k outline vertices: an N x M distance matrix would take 300 MiB."""
    mask = np.zeros((24, 5_100), bool)
    for top, length in ((2, 4_000), (14, 5_000)):
        mask[top + 1 : top + 5, :length] = True
        mask[top, :length:2] = True  # a jagged edge: a vertex per column
    tracemalloc.start()
    (read,), _ = written_and_read_back(tmp_path, [mask])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40 * 2**20
    assert not (mask & ~read).any() and (read & ~mask).sum() <= 8


def test_seam_costs_are_the_background_pixels_fillpoly_paints() -> None:
    """`background_on_lines` counts, per seam, the background pixels of exactly the line that
    cv2.fillPoly paints for a polygon edge (here a degenerate polygon going out and back)."""
    rng = np.random.default_rng(11)
    mask = rng.random((60, 80)) < 0.4
    starts = rng.integers(0, (80, 60), size=(3000, 2))
    ends = rng.integers(0, (80, 60), size=(3000, 2))
    got = background_on_lines(starts, ends, mask)
    for index in range(len(starts)):
        painted = np.zeros(mask.shape, np.uint8)
        cv2.fillPoly(painted, [np.array([starts[index], ends[index], starts[index]], np.int32)], 1)
        assert got[index] == np.count_nonzero(painted.astype(bool) & ~mask), index
