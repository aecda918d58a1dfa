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

import math

import cv2
import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

EXACT_FLOAT32_DISTANCE = 1290.0  # from here on, scipy's float64 transform (float32 stops holding squares)
SAFE_FLOAT32_DISTANCE = 400.0  # below this, OpenCV's distances square back to their exact integers
_NEAR_TOP = np.float32(1.0 - 1e-5)  # raw distances within this share of the largest may be the largest
_TILE = 64  # pixels: `first_farthest` takes windows around the candidates of each tile this size (or more)
_WHOLE_SHARE = 0.5  # ... unless they cover more than this share of the array


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

    def exact(self, index: tuple[slice | np.ndarray, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The corrected distances at `raw[index]` (written into `out` when given)."""
        return correctly_rounded(self.raw[index], out)

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
    correctly rounded distance to the zeros of the whole `binary`; None when that corner holds no
    nonzero pixel. The same pixel as `ExactDistances(binary).first_max(...)`, for less work.

    The chessboard distance c (OpenCV's, exact) bounds the Euclidean one e: c <= e <= sqrt(2) c.
    So the largest e is at least the largest c, and only pixels with sqrt(2) c reaching that can
    hold it; their e is exact in a window around them as wide as sqrt(2) c, where the exact
    transform is taken. Where those windows would cover most of the array, it is taken whole."""
    chess = cv2.distanceTransform(binary.view(np.uint8), cv2.DIST_C, 3)[:rows, :cols]
    reach = int(chess.max(initial=0.0))
    if reach == 0:
        return None
    at_row, at_col = _where(chess >= math.isqrt((reach * reach + 1) // 2 - 1) + 1)  # 2 c^2 >= reach^2
    margin = math.ceil(math.sqrt(2.0) * reach) + 1
    groups = _nearby(at_row, at_col, max(_TILE, 4 * margin))
    windows = [_around(at_row[group], at_col[group], margin, binary.shape) for group in groups]
    if sum((height.stop - height.start) * (width.stop - width.start) for height, width in windows) > (
        _WHOLE_SHARE * binary.size
    ):
        best = ExactDistances(binary).first_max(slice(0, rows), slice(0, cols))
        return None if best is None else best[:2]
    squares = np.empty(len(at_row))
    for group, (height, width) in zip(groups, windows):
        window = ExactDistances(binary[height, width])
        squares[group] = window.squares(at_row[group] - height.start, at_col[group] - width.start)
    best = np.flatnonzero(squares == squares.max())[0]  # candidates are in row-major order
    return int(at_row[best]), int(at_col[best])


def _nearby(at_row: np.ndarray, at_col: np.ndarray, side: int) -> list[np.ndarray]:
    """Indices of the pixels (at_row, at_col) grouped by the side x side tile they lie in."""
    tile = (at_row // side) * (int(at_col.max()) // side + 1) + at_col // side
    order = np.argsort(tile, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(tile[order])) + 1)


def _around(at_row: np.ndarray, at_col: np.ndarray, margin: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The window holding the pixels (at_row, at_col) and `margin` more pixels on every side."""
    return (
        slice(max(int(at_row.min()) - margin, 0), min(int(at_row.max()) + margin + 1, shape[0])),
        slice(max(int(at_col.min()) - margin, 0), min(int(at_col.max()) + margin + 1, shape[1])),
    )


def _where(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the true entries of a 2-D array, in row-major order (`np.nonzero`,
    faster for the few entries that are true here)."""
    return np.divmod(np.flatnonzero(flags), flags.shape[1])


def _nearest_zero_squares(binary: np.ndarray, at_row: np.ndarray, at_col: np.ndarray) -> np.ndarray:
    """Exact squared distances (float64 integers) of the pixels (at_row, at_col) to the nearest zero
    of `binary`: a nearest zero always has a nonzero 4-neighbour (one step from it towards the pixel
    is nearer), so only those zeros are searched."""
    inside = binary.astype(bool, copy=False)
    edge = np.zeros_like(inside)
    edge[:-1] |= inside[1:]
    edge[1:] |= inside[:-1]
    edge[:, :-1] |= inside[:, 1:]
    edge[:, 1:] |= inside[:, :-1]
    edge &= ~inside
    distance, _ = cKDTree(np.column_stack(_where(edge))).query(np.column_stack([at_row, at_col]))
    return np.rint(np.square(distance))
