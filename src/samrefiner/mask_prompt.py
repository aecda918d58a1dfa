"""The dense mask prompt S * G (SPEC section 2) on the model's mask-prompt grid, crop-wise.

The reference resizes two whole-image planes, S = +1/-1 and the Gaussian G, bilinearly to the
input size, pads them to the input frame and resizes them to the mask-prompt grid. A grid cell
reads two input-frame pixels along each axis (SAM: pixels 4a+1 and 4a+2 of 1024 for cell a of 256),
each of which reads two original pixels: at most 4 x 4 original pixels, inside a short range.
So only the cells an object's crop reaches are evaluated, and on them:
- The two resizes fold into 4 weighted taps per axis (products of the two steps' weights, 0 for
  the padding), applied rows first to G and to the mask (0/1), at the pixels the taps read only.
  These float32 sums run in another order than torch's and agree with it to about 1e-6; whether a
  cell of G is zero is exact (every term is a nonnegative product), and zero cells become 1 as in
  the reference.
- S = 2 * mask - 1 counts only through its sign, which is the sign of (mask share - 1/2) wherever
  that share is farther than 1e-4 from 1/2. The few cells closer than that are computed in torch's
  weights and order of operations, so every sign is torch's.
`tests/prompt_reference.py` computes the same with whole-image torch resizes; the tests hold the
two together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_array

from samrefiner.distances import ExactDistances


def linear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and float32 weights w0, w1 of torch's bilinear resize along one axis.

    align_corners=False, no antialias; the source coordinate is rounded once (as torch's fused
    multiply-add does) so that the weights are torch's own.
    """
    scale = np.float32(size_in) / np.float32(size_out)
    source = (np.float64(scale) * (np.arange(size_out) + 0.5) - 0.5).astype(np.float32)
    source = np.maximum(source, np.float32(0.0))
    first = source.astype(np.int64)
    second = np.minimum(first + 1, size_in - 1)
    weight = source - first.astype(np.float32)
    return first, second, np.float32(1.0) - weight, weight


@dataclass(frozen=True)
class _CellTaps:
    """Along one axis, for each mask-grid cell: its two input-frame pixels (weights v0, v1) and the
    two original pixels each of those reads (first/second, weights w0/w1, `real` False for the
    input frame's padding), all (M, 2); the first and last original pixel a cell reads (lowest,
    highest: nondecreasing, huge for padding cells); and the folded taps of both resizes:
    `pixels` (M, 4) original indices and `weights` (M, 4) float32 (0 for padding)."""

    first: np.ndarray
    second: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    real: np.ndarray
    v0: np.ndarray
    v1: np.ndarray
    lowest: np.ndarray
    highest: np.ndarray
    pixels: np.ndarray
    weights: np.ndarray

    @classmethod
    def build(cls, size_in: int, size_out: int, frame: int, cells: int) -> _CellTaps:
        """Taps of original side `size_in` -> input side `size_out`, padded to `frame` -> `cells`."""
        first, second, w0, w1 = linear_taps(size_in, size_out)
        low, high, v0, v1 = linear_taps(frame, cells)
        taps = np.stack([low, high], axis=1)
        real = taps < size_out
        clipped = np.minimum(taps, size_out - 1)
        beyond = np.iinfo(np.int64).max  # padding cells: after every original pixel (keeps both sorted)
        lowest = np.where(real[:, 0], first[clipped[:, 0]], beyond)
        highest = np.where(real[:, 0], second[clipped[:, 1]], beyond)
        first, second, w0, w1 = first[clipped], second[clipped], w0[clipped], w1[clipped]
        pixels = np.stack([first[:, 0], second[:, 0], first[:, 1], second[:, 1]], axis=1)
        weights = np.stack([v0 * w0[:, 0], v0 * w1[:, 0], v1 * w0[:, 1], v1 * w1[:, 1]], axis=1)
        weights = np.where(np.repeat(real, 2, axis=1), weights, np.float32(0.0)).astype(np.float32)
        return cls(first, second, w0, w1, real, v0, v1, lowest, highest, pixels, weights)

    def window(self, start: int, stop: int) -> slice:
        """The cells that read original pixels in [start, stop)."""
        return slice(int(np.searchsorted(self.highest, start)), int(np.searchsorted(self.lowest, stop)))


_FOLDS_KEPT = 64  # crops whose folded taps a grid keeps
_UNSURE = 1e-4  # |share of mask - 1/2| within which float rounding might decide S's sign (errors ~1e-6)


class _CropAxis:
    """One axis of a crop at `origin` of `length` pixels, seen from the grid cells `cells`:
    original indices become crop indices, and taps outside the crop are flagged (they read
    background)."""

    def __init__(self, taps: _CellTaps, cells: slice, origin: int, length: int) -> None:
        self.taps, self.cells, self.origin, self.length = taps, cells, origin, length

    def local(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop indices (clipped) and whether each lies in the crop."""
        index = pixels - self.origin
        inside = (index >= 0) & (index < self.length)
        return np.clip(index, 0, self.length - 1), inside

    def folded(self) -> tuple[np.ndarray, csr_array]:
        """The distinct crop pixels the cells' folded taps read, and the cells' taps as a sparse
        (cells x those pixels) matrix: each row holds a cell's 4 weights (0 for taps outside the
        crop) in tap order, repeated pixels kept apart, so that a product with it sums in tap
        order."""
        index, inside = self.local(self.taps.pixels[self.cells])
        needed, position = np.unique(index, return_inverse=True)
        weights = np.where(inside, self.taps.weights[self.cells], np.float32(0.0))
        rows = len(index)
        matrix = csr_array(
            (weights.reshape(-1), position.reshape(-1), np.arange(0, 4 * rows + 1, 4)), shape=(rows, len(needed))
        )
        return needed, matrix


@dataclass(frozen=True)
class MaskCrop:
    """What the mask prompt needs of one object: its crop (`inside`, bool) at `origin` (top, left),
    the crop's distances to the background, their (correctly rounded) maximum and the mask's pixel
    count."""

    inside: np.ndarray
    origin: tuple[int, int]
    distances: ExactDistances
    peak: np.float32
    area: int


class MaskPromptGrid:
    """The reference's resize chain for dense prompts, set up once per image (see the module)."""

    def __init__(self, original_size: tuple[int, int], input_size: tuple[int, int], frame: int, cells: int) -> None:
        self.size = cells
        self._folds: dict[tuple[bool, int, int, int, int], tuple[np.ndarray, csr_array]] = {}
        self.rows, self.cols = (
            _CellTaps.build(size_in, size_out, frame, cells) for size_in, size_out in zip(original_size, input_size)
        )

    def _folded(self, axis: _CropAxis) -> tuple[np.ndarray, csr_array]:
        """`axis.folded()`, kept for crops seen before (masks spanning the image share one crop)."""
        key = (axis.taps is self.rows, axis.cells.start, axis.cells.stop, axis.origin, axis.length)
        folded = self._folds.get(key)  # one read: another mining thread may clear the dict meanwhile
        if folded is None:
            folded = axis.folded()
            if len(self._folds) >= _FOLDS_KEPT:
                self._folds.clear()
            self._folds[key] = folded
        return folded

    def window(self, box: tuple[int, int, int, int]) -> tuple[slice, slice]:
        """The grid cells whose value depends on original pixels inside `box` (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = box
        return self.rows.window(y1, y2 + 1), self.cols.window(x1, x2 + 1)

    def prompt(
        self, crop: MaskCrop, box: tuple[int, int, int, int], gamma: float, amplitude: float, out: np.ndarray
    ) -> None:
        """Write S * G into `out` (M x M): S = +/-amplitude, G the resized Gaussian (1 where it is 0);
        -amplitude on every cell the object does not reach."""
        cells = self.window(box)
        out[...] = -amplitude
        if cells[0].stop <= cells[0].start or cells[1].stop <= cells[1].start:
            return  # the object reaches no cell: a sliver between the pixels that cells read
        rows = _CropAxis(self.rows, cells[0], crop.origin[0], crop.inside.shape[0])
        cols = _CropAxis(self.cols, cells[1], crop.origin[1], crop.inside.shape[1])
        row_pixels, row_taps = self._folded(rows)
        col_pixels, col_taps = self._folded(cols)
        at_rows, at_cols = _as_slice(row_pixels), _as_slice(col_pixels)
        planes = np.empty((len(row_pixels), 2, len(col_pixels)), dtype=np.float32)  # rows of G and the mask
        planes[:, 1] = crop.inside[at_rows][:, at_cols]  # rows, then columns: faster than np.ix_
        gaussian = np.subtract(crop.distances.exact(at_rows, at_cols, out=planes[:, 0]), crop.peak, out=planes[:, 0])
        np.square(gaussian, out=gaussian)
        np.divide(gaussian, -np.float32(max(crop.area / gamma, 1.0)), out=gaussian)
        np.multiply(np.exp(gaussian, out=gaussian), planes[:, 1], out=gaussian)  # 0 outside the mask
        across = row_taps @ planes.reshape(len(row_pixels), -1)  # (row cells, 2 x columns)
        across = np.ascontiguousarray(across.reshape(-1, len(col_pixels)).T)  # (columns, row cells x 2)
        folded = (col_taps @ across).T.reshape(-1, 2, col_taps.shape[0]).transpose(1, 0, 2)
        gaussian, share = folded[0], folded[1]
        positive = share > 0.5
        unsure = np.abs(share - np.float32(0.5)) <= _UNSURE
        if unsure.any():
            at_row, at_col = np.nonzero(unsure)
            positive[at_row, at_col] = _torch_order_signs(crop.inside, rows, cols, at_row, at_col) > 0
        gaussian[gaussian <= 0] = 1.0
        out[cells] = np.where(positive, np.float32(amplitude), np.float32(-amplitude)) * gaussian


def _as_slice(indices: np.ndarray) -> slice | np.ndarray:
    """Sorted distinct indices as a slice when they are a contiguous run (a view instead of a copy)."""
    if indices.size and indices[-1] - indices[0] + 1 == indices.size:
        return slice(int(indices[0]), int(indices[-1]) + 1)
    return indices


def _torch_order_signs(
    inside: np.ndarray, rows: _CropAxis, cols: _CropAxis, at_row: np.ndarray, at_col: np.ndarray
) -> np.ndarray:
    """The resized S (+1 in the mask, -1 elsewhere and in the padding) at cells (at_row, at_col) of
    the window, with torch's weights and order: columns, then rows, of both resizes.

    Arrays are indexed [cell, t, i, s, j]: input-frame row tap t, its original row i; input-frame
    column tap s, its original column j."""

    def axis(part: _CropAxis, at: np.ndarray) -> tuple[np.ndarray, ...]:
        taps, pick = part.taps, part.cells.start + at
        local, within = part.local(np.stack([taps.first[pick], taps.second[pick]], axis=-1))  # (n, tap, pixel)
        return local, within, taps.w0[pick], taps.w1[pick], taps.real[pick], taps.v0[pick], taps.v1[pick]

    row_pixels, row_within, a0, a1, row_real, v0, v1 = axis(rows, at_row)
    col_pixels, col_within, b0, b1, col_real, u0, u1 = axis(cols, at_col)
    at_rows, at_cols = (slice(None), slice(None), slice(None), None, None), (slice(None), None, None)
    read = inside[row_pixels[at_rows], col_pixels[at_cols]] & row_within[at_rows] & col_within[at_cols]  # outside: 0
    plane = np.where(read, np.float32(1.0), np.float32(-1.0))
    across = b0[:, None, None, :] * plane[..., 0] + b1[:, None, None, :] * plane[..., 1]  # [cell, t, i, s]
    values = a0[:, :, None] * across[:, :, 0, :] + a1[:, :, None] * across[:, :, 1, :]  # [cell, t, s]
    values = np.where(row_real[:, :, None] & col_real[:, None, :], values, np.float32(-1.0))
    return v0 * (u0 * values[:, 0, 0] + u1 * values[:, 0, 1]) + v1 * (u0 * values[:, 1, 0] + u1 * values[:, 1, 1])
