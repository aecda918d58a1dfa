"""Exact Euclidean distance transforms, corrected only where they are read.

Prompt mining needs, of a mask's distance transform, the first pixel at the largest distance and
the distances at the pixels the mask prompt reads: `ExactDistances` gives both without correcting
(or even copying) the whole transform. Distances are those of SPEC section 2: from each nonzero
pixel to the nearest zero pixel, pixels outside the array are not zeros, float32 correctly rounded.
Where the largest distance lies is always exact; the distances the mask prompt reads are exact
below 400 pixels and beyond 1290, and at most a few integers off (before the root) in between,
which moves the mask prompt's Gaussian there by less than 1e-5.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

EXACT_FLOAT32_DISTANCE = 1290.0  # from here on, scipy's float64 transform (float32 stops holding squares)
SAFE_FLOAT32_DISTANCE = 400.0  # below this, OpenCV's distances square back to their exact integers
_NEAR_TOP = np.float32(1.0 - 1e-5)  # raw distances within this share of the largest may be the largest
_TILE = 64  # pixels: exact distances are measured in windows around the candidates of each tile this size (or more)
_PAIRS_AT_ONCE = 1 << 18  # (pixel, zero) pairs measured in one numpy operation
_PAIRS_PER_PIXEL = 2  # beyond this many (pixel, zero) pairs per pixel, a whole exact transform is cheaper


class ExactDistances:
    """The distance transform of a binary array (bool or 0/1 uint8).

    OpenCV's exact transform is a little off (seen: up to 6.4e-7 relative, depending on its code
    path, even on the thread), so the values read are squared, rounded to the integers they stand
    for and their square roots taken again, in float32: exact below 400 pixels (the squaring's
    error stays under 1/2). Correctly rounded roots of integers below 1448^2 keep the integers'
    order and ties, so an argmax over them is the integers' argmax. Where the largest distance
    reaches 400, the candidates for it are measured exactly to the nearest zero instead
    (`squares`); transforms reaching 1290 are scipy's float64 ones, exact throughout.
    """

    def __init__(self, binary: np.ndarray) -> None:
        self.binary = binary
        raw = cv2.distanceTransform(binary.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        if raw.max(initial=0.0) >= EXACT_FLOAT32_DISTANCE:
            raw = ndi.distance_transform_edt(binary)
        self.raw = raw

    def exact(
        self,
        rows: slice | np.ndarray = slice(None),
        cols: slice | np.ndarray = slice(None),
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The corrected distances of the block `rows` x `cols` (written into `out` when given)."""
        return correctly_rounded(self.raw[rows][:, cols], out)

    def squares(self, at_row: np.ndarray, at_col: np.ndarray) -> np.ndarray:
        """The exact squared distances (integers, as float64) of the pixels (at_row, at_col)."""
        values = self.raw[at_row, at_col]
        if self.raw.dtype == np.float32 and values.max(initial=0.0) >= SAFE_FLOAT32_DISTANCE:
            return _nearest_zero_squares(self.binary, at_row, at_col)
        return np.rint(np.square(correctly_rounded(values), dtype=np.float64))

    def first_max(self, rows: slice = slice(None), cols: slice = slice(None)) -> tuple[int, int, float] | None:
        """(row, col, distance) of the first pixel of `raw[rows, cols]` in row-major order at the
        largest exact distance (indices within that window; the distance correctly rounded as the
        values `exact` reads); None when all are 0.

        Only the pixels whose raw distance is near the largest can hold the largest exact one (the
        raw values are off by far less than 1e-5 of it), so only they are measured."""
        window = self.raw[rows, cols]
        top = window.max(initial=0.0)
        if top == 0:
            return None
        at_row, at_col = _where(window >= top * _NEAR_TOP)
        first_row, first_col = rows.indices(self.raw.shape[0])[0], cols.indices(self.raw.shape[1])[0]
        squares = self.squares(at_row + first_row, at_col + first_col)
        best = int(np.argmax(squares))
        root = math.sqrt(squares[best]) if self.raw.dtype == np.float64 else np.sqrt(np.float32(squares[best]))
        return int(at_row[best]), int(at_col[best]), float(root)


def correctly_rounded(raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """OpenCV's float32 distances squared, rounded to integers and rooted again (into `out` when
    given, else a new array); scipy's float64 ones, exact already, copied (cast to `out`'s type)."""
    if raw.dtype == np.float64:
        return raw.copy() if out is None else _copied(raw, out)
    result = np.multiply(raw, raw, out=out)
    np.rint(result, out=result)
    return np.sqrt(result, out=result)


def _copied(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.copyto(out, values, casting="same_kind")
    return out


def first_farthest(binary: np.ndarray, rows: int, cols: int) -> tuple[int, int] | None:
    """(row, col) of the first pixel of `binary[:rows, :cols]` in row-major order at the largest
    correctly rounded distance to the zeros of the whole `binary` (which holds at least one zero);
    None when that corner holds no nonzero pixel. The same pixel as
    `ExactDistances(binary).first_max(...)`, for less work.

    OpenCV's 5 x 5 chamfer distance d is the length of a path of steps, each weighing at least a
    share s (0.98) of its Euclidean length, so d >= s e. The pixel at the largest d has an exact
    distance e0, and the largest e is at least e0: only pixels with d >= s e0 can hold it, and
    their exact distances are measured to the zeros near them."""
    chamfer = cv2.distanceTransform(binary.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)[:rows, :cols]
    _, top, _, (col, row) = cv2.minMaxLoc(chamfer)  # a pixel at the largest chamfer distance
    if top == 0:
        return None
    share = chamfer_share(top)
    reach = math.ceil(top / share) + 1  # every pixel of the corner has a zero this near
    at_top = np.array([row]), np.array([col])
    nearest = int(_nearest_squares(*at_top, *_zeros_near(binary, *at_top, reach))[0])
    at_row, at_col = _where(chamfer >= np.float32(share * math.sqrt(nearest)))
    squares = _exact_squares(binary, at_row, at_col, reach)
    if squares is None:  # many candidates among many zeros (a checkerboard): one whole transform is cheaper
        best = ExactDistances(binary).first_max(slice(0, rows), slice(0, cols))
        return None if best is None else best[:2]
    best = np.flatnonzero(squares == squares.max())[0]  # candidates are in row-major order
    return int(at_row[best]), int(at_col[best])


@functools.cache
def _chamfer_weights() -> tuple[float, float, float]:
    """The weights OpenCV's 5 x 5 chamfer transform gives the steps (0, 1), (1, 1) and (1, 2)."""
    probe = np.ones((5, 5), np.uint8)
    probe[2, 2] = 0
    chamfer = cv2.distanceTransform(probe, cv2.DIST_L2, cv2.DIST_MASK_5)
    return float(chamfer[2, 3]), float(chamfer[3, 3]), float(chamfer[3, 4])


def chamfer_share(top: float) -> float:
    """A share s such that OpenCV's 5 x 5 chamfer distances up to `top` are at least s times the
    Euclidean ones: the least ratio of a step's weight to its length, less the float32 rounding of
    the sums (each addition of a step of weight >= 1 rounds by at most 2^-24 of the total)."""
    lengths = (1.0, math.sqrt(2.0), math.sqrt(5.0))
    least = min(weight / length for weight, length in zip(_chamfer_weights(), lengths))
    return least * (1.0 - (top + 2.0) * 2.0**-23) - 1e-6


def _exact_squares(binary: np.ndarray, at_row: np.ndarray, at_col: np.ndarray, reach: int) -> np.ndarray | None:
    """The exact squared distances (int64) of the pixels (at_row, at_col), each with a zero of
    `binary` within `reach`, to the nearest zero, measured tile by tile; None when that would take
    more than `_PAIRS_PER_PIXEL` (pixel, zero) pairs per pixel of `binary`."""
    groups = _nearby(at_row, at_col, max(_TILE, 4 * reach))
    zeros = [_zeros_near(binary, at_row[group], at_col[group], reach) for group in groups]
    if sum(len(group) * len(near[0]) for group, near in zip(groups, zeros)) > _PAIRS_PER_PIXEL * binary.size:
        return None
    squares = np.empty(len(at_row), dtype=np.int64)
    for group, (zero_row, zero_col) in zip(groups, zeros):
        squares[group] = _nearest_squares(at_row[group], at_col[group], zero_row, zero_col)
    return squares


def _nearest_squares(rows: np.ndarray, cols: np.ndarray, zero_row: np.ndarray, zero_col: np.ndarray) -> np.ndarray:
    """Each pixel's least squared distance to the zeros given, `_PAIRS_AT_ONCE` pairs at a time."""
    step = max(1, _PAIRS_AT_ONCE // max(len(zero_row), 1))
    parts = []
    for start in range(0, len(rows), step):
        row, col = rows[start : start + step, None], cols[start : start + step, None]
        parts.append(((zero_row - row) ** 2 + (zero_col - col) ** 2).min(axis=1))
    return np.concatenate(parts)


def _zeros_near(
    binary: np.ndarray, at_row: np.ndarray, at_col: np.ndarray, reach: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the zeros within `reach` of the pixels (at_row, at_col)'s bounding box
    that have a nonzero 4-neighbour: a pixel's nearest zero always has one (one step from it towards
    the pixel is nearer, so nonzero)."""
    height, width = binary.shape
    top, left = max(int(at_row.min()) - reach, 0), max(int(at_col.min()) - reach, 0)
    bottom, right = min(int(at_row.max()) + reach + 1, height), min(int(at_col.max()) + reach + 1, width)
    above, before = min(top, 1), min(left, 1)  # one more pixel around, where the array goes on
    zeros = np.logical_not(binary[top - above : bottom + 1, left - before : right + 1]).view(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    eroded = cv2.erode(zeros, cross, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    edge = cv2.subtract(zeros, eroded)[above : above + bottom - top, before : before + right - left]
    zero_row, zero_col = _where(edge.view(bool))
    return zero_row + top, zero_col + left


def _nearby(at_row: np.ndarray, at_col: np.ndarray, side: int) -> list[np.ndarray]:
    """Indices of the pixels (at_row, at_col) grouped by the side x side tile they lie in."""
    tile = (at_row // side) * (int(at_col.max()) // side + 1) + at_col // side
    order = np.argsort(tile, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(tile[order])) + 1)


def _where(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the true entries of a 2-D array, in row-major order (`np.nonzero`,
    faster for the few entries that are true here)."""
    return np.divmod(np.flatnonzero(flags), flags.shape[1])


def _nearest_zero_squares(binary: np.ndarray, at_row: np.ndarray, at_col: np.ndarray) -> np.ndarray:
    """Exact squared distances (float64 integers) of the pixels (at_row, at_col) to the nearest zero
    of `binary`, from a KD-tree of the zeros that have a nonzero 4-neighbour."""
    zero_row, zero_col = _zeros_near(binary, at_row, at_col, max(binary.shape))
    distance, _ = cKDTree(np.column_stack([zero_row, zero_col])).query(np.column_stack([at_row, at_col]))
    return np.rint(np.square(distance))
