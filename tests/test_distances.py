"""`samrefiner.distances` against scipy's exact transform: the farthest pixel (first in row-major
order among ties) and the correctly rounded distances, on shapes that exercise every path of
`first_farthest` (candidates in one window, in many tiles, long rows of ties, distances beyond 1290),
and the bound it rests on: OpenCV's chamfer distances are at least `chamfer_share` of the exact ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from samrefiner.distances import ExactDistances, chamfer_share, first_farthest


def farthest_reference(binary: np.ndarray, rows: int, cols: int) -> tuple[int, int] | None:
    """First (row, col) of binary[:rows, :cols] at the largest exact distance to a zero of binary."""
    corner = ndi.distance_transform_edt(binary)[:rows, :cols]
    if corner.max(initial=0.0) == 0:
        return None
    row, col = np.unravel_index(int(np.argmax(corner)), corner.shape)
    return int(row), int(col)


def scattered(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Background with a few small mask islands far apart: many separate far-away candidates."""
    rng = np.random.default_rng(seed)
    binary = np.ones(shape, bool)
    for _ in range(rng.integers(1, 6)):
        row, col = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        binary[row : row + rng.integers(1, 4), col : col + rng.integers(1, 4)] = False
    return binary


def speckled(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Blocky noise, as a random-weight model's upscaled outputs look."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 8 + 1, shape[1] // 8 + 1)) < 0.6
    return np.kron(coarse, np.ones((8, 8), bool))[: shape[0], : shape[1]] ^ (rng.random(shape) < 0.01)


def symmetric(side: int) -> np.ndarray:
    """A square ring of background around a zero centre and zero corners: many exact ties."""
    binary = np.ones((side, side), bool)
    binary[side // 2, side // 2] = binary[0, 0] = binary[0, -1] = binary[-1, 0] = binary[-1, -1] = False
    return binary


def corridor(width: int, length: int) -> np.ndarray:
    """Background between two rows of zeros: whole rows of pixels tie at the largest distance."""
    binary = np.ones((width, length), bool)
    binary[0] = binary[-1] = False
    return binary


def zeros_at(shape: tuple[int, int], *zeros: tuple[int, int]) -> np.ndarray:
    binary = np.ones(shape, bool)
    for zero in zeros:
        binary[zero] = False
    return binary


CASES = [
    # a few zeros in small arrays: the farthest pixels lie on the edge of the array
    zeros_at((7, 7), (1, 2), (6, 1), (6, 3)),
    zeros_at((11, 11), (1, 4), (10, 1)),
    *(scattered((120, 200), seed) for seed in range(8)),
    *(speckled((150, 170), seed) for seed in range(4)),
    *(symmetric(side) for side in (9, 30, 61)),
    np.pad(np.zeros((1, 1), bool), ((0, 2), (0, 3000)), constant_values=True),  # distances past 1290
    # one zero at the end of two long rows: OpenCV's 886 for sqrt(886^2 + 1) squares back to 886^2
    *(zeros_at((2, width), (0, width - 1)) for width in (887, 1001, 1250)),
    corridor(9, 700),  # a row of 700 pixels all at the largest distance
    corridor(10, 700),  # two such rows
    zeros_at((1500, 1500), (700, 700), (0, 1499)),  # chamfer sums of 1400 steps (float32 rounding)
    # every other pixel a zero: candidates everywhere among zeros everywhere (the whole transform instead)
    np.indices((64, 90)).sum(axis=0) % 2 == 0,
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_first_farthest_is_the_exact_first_argmax(index: int) -> None:
    binary = CASES[index]
    for rows, cols in (binary.shape, (binary.shape[0] - 1, binary.shape[1] - 1)):
        want = farthest_reference(binary, rows, cols)
        assert first_farthest(binary, rows, cols) == want
        best = ExactDistances(binary).first_max(slice(0, rows), slice(0, cols))
        assert (None if best is None else best[:2]) == want


def test_no_nonzero_pixel_in_the_corner() -> None:
    binary = np.zeros((5, 6), bool)
    binary[-1, :] = True
    assert first_farthest(binary, 4, 6) is None
    assert ExactDistances(binary).first_max(slice(0, 4), slice(0, 6)) is None


@pytest.mark.parametrize("index", range(len(CASES)))
def test_exact_distances_are_scipys_correctly_rounded(index: int) -> None:
    """Exact below 400 pixels and from 1290 on; in between, a few integers off at most before the
    root; the largest distance always exact."""
    binary = CASES[index]
    want = ndi.distance_transform_edt(binary)
    got = ExactDistances(binary).exact()
    if got.dtype == np.float32:
        low = want < 400
        np.testing.assert_array_equal(got[low], want[low].astype(np.float32))
        assert np.abs(np.square(got[~low], dtype=np.float64) - np.square(want[~low])).max(initial=0) <= 8
    else:
        np.testing.assert_array_equal(got, want)
    row, col, peak = ExactDistances(binary).first_max()
    assert want[row, col] == want.max() and peak == got.dtype.type(want.max())


@pytest.mark.parametrize("index", range(len(CASES)))
def test_chamfer_distances_bound_the_exact_ones(index: int) -> None:
    """`first_farthest` keeps only pixels whose chamfer distance reaches `chamfer_share` of the largest
    exact one: that share must hold everywhere, on the OpenCV installed."""
    binary = CASES[index]
    chamfer = cv2.distanceTransform(binary.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5).astype(np.float64)
    exact = ndi.distance_transform_edt(binary)
    assert (chamfer >= chamfer_share(chamfer.max()) * exact).all()
    assert chamfer_share(chamfer.max()) > 0.97


@st.composite
def small_arrays(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """Small binary arrays with at least one zero (dense or sparse noise, or a few zeros), as bool,
    uint8, transposed or strided views, and a corner of them."""
    height, width = draw(st.integers(2, 40)), draw(st.integers(2, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["dense", "sparse", "few"]))
    if kind == "few":
        binary = np.ones((height, width), bool)
        binary[rng.integers(height, size=3), rng.integers(width, size=3)] = False
    else:
        binary = rng.random((height, width)) < (draw(st.floats(0.3, 0.99)) if kind == "dense" else 0.995)
    binary[rng.integers(height), rng.integers(width)] = False
    layout = draw(st.sampled_from(["bool", "uint8", "transposed", "strided"]))
    if layout == "uint8":
        binary = binary.astype(np.uint8)
    elif layout == "transposed":
        binary = binary.T
    elif layout == "strided":
        binary = np.repeat(binary, 2, axis=1)[:, ::2]
    return binary, draw(st.integers(1, binary.shape[0])), draw(st.integers(1, binary.shape[1]))


@settings(max_examples=300, deadline=None)
@given(small_arrays())
def test_first_farthest_on_random_arrays(case: tuple[np.ndarray, int, int]) -> None:
    binary, rows, cols = case
    want = farthest_reference(binary.astype(bool), rows, cols)
    assert first_farthest(binary, rows, cols) == want
    best = ExactDistances(binary).first_max(slice(0, rows), slice(0, cols))
    assert (None if best is None else best[:2]) == want
