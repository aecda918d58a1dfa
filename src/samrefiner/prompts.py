"""Prompt excavation (SPEC section 2): distance-guided points, elastic boxes, Gaussian-style masks.

The geometry is the model's (`Geometry`: input frame, embedding grid, mask-prompt grid; SAM's by
default). Everything is computed on each object's bounding crop, which gives exactly the whole-image
result (`tests/prompt_reference.py` computes it literally from the SPEC; the tests hold the two
together): distances use the exact Euclidean transform with "outside the image is not background";
the negative point's transform covers the box only (every mask pixel lies in it); the similarity
map of the elastic box (CEBox) is evaluated only on the strips it tests; the mask prompt
(`samrefiner.mask_prompt`) only on the grid cells the object reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import torch

from samrefiner.distances import ExactDistances, first_farthest
from samrefiner.mask_prompt import MaskCrop, MaskPromptGrid, linear_taps
from samrefiner.types import POINT_STRATEGIES, PointStrategy

POSITIVE, NEGATIVE, NOT_A_POINT = 1, 0, -1
MASK_SIZE = 256  # side of SAM's dense mask prompt
SIMILARITY_THRESHOLD = 0.5  # CEBox: a pixel is "like the object" above this cosine similarity


@dataclass(frozen=True)
class Geometry:
    """A model's prompt geometry (see `PromptableModel`); the defaults are SAM's."""

    image_size: int = 1024  # side of the square padded input frame
    embedding_size: int = 64  # side of the image-embedding grid
    mask_input_size: int = MASK_SIZE  # side of the dense mask prompt

    @classmethod
    def of(cls, model: object) -> Geometry:
        """The geometry a model states (its `image_size`, `embedding_size`, `mask_input_size`)."""
        return cls(int(model.image_size), int(model.embedding_size), int(model.mask_input_size))


SAM_GEOMETRY = Geometry()


@dataclass(frozen=True)
class Prompts:
    """Prompts for N objects, in the original image frame.

    points: (N, K, 2) int64 (x, y), the positive point then (K = 2) the negative one;
    labels: (N, K) int64, 1 positive, 0 negative, -1 padding ("not a point");
    boxes: (N, 4) int64 x1, y1, x2, y2 with x2, y2 the last foreground column/row (after CEBox);
    box_expanded: (N,) bool, whether CEBox moved any side;
    mask_inputs: (N, 1, M, M) float32 dense prompts in the padded input frame (M the model's
    mask_input_size), or None.
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    box_expanded: np.ndarray
    mask_inputs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray) -> Prompts:
        """The prompts of the objects `index` (an integer or boolean array)."""
        masks = None if self.mask_inputs is None else self.mask_inputs[index]
        return Prompts(self.points[index], self.labels[index], self.boxes[index], self.box_expanded[index], masks)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) int64 x1, y1, x2, y2 (inclusive) of N x H x W masks; zeros for an empty mask."""
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    for index, mask in enumerate(masks):
        box = bounding_box(np.asarray(mask, dtype=bool))
        if box is not None:
            boxes[index] = box
    return boxes


def positive_points(masks: np.ndarray) -> np.ndarray:
    """(N, 2) int64 (x, y): each mask's pixel farthest from the background; (0, 0) if empty."""
    points = np.zeros((len(masks), 2), dtype=np.int64)
    for index, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        box = bounding_box(mask)
        if box is not None:
            points[index] = _DistanceCrop(mask, box).farthest_point()
    return points


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of a bool mask, inclusive; None when it is empty."""
    x, y, width, height = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    if width == 0:
        return None
    return x, y, x + width - 1, y + height - 1


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source indices of torch's 'nearest' resize along one axis."""
    scale = np.float32(size_in) / np.float32(size_out)
    return np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64), size_in - 1)


def valid_embedding_size(
    height: int, width: int, grid: int, input_size: tuple[int, int] | None = None, image_size: int | None = None
) -> tuple[int, int]:
    """Rows and columns of the embedding grid that cover the resized image (the reference's rule);
    all of it when the resized image (`input_size`) fills the whole `image_size` input frame (models
    that resize to the whole frame: SAM 2.1, SAM 3, EdgeTAM; or a square image). `image_size`
    defaults to the input's longest side (the frame of models that keep the aspect ratio)."""
    if input_size is not None and tuple(input_size) == (image_size or max(input_size),) * 2:
        return grid, grid
    if height >= width:
        return grid, int(grid * width / height)
    return int(grid * height / width), grid


class _DistanceCrop:
    """One mask's bounding crop plus a one-pixel ring, where its distance transform is exact."""

    def __init__(self, mask: np.ndarray, box: tuple[int, int, int, int]) -> None:
        height, width = mask.shape
        x1, y1, x2, y2 = box
        self.top, self.left = max(y1 - 1, 0), max(x1 - 1, 0)
        self.crop = mask[self.top : min(y2 + 2, height), self.left : min(x2 + 2, width)]
        # a mask covering the whole image has no background anywhere: all distances equal (0)
        self.distances = ExactDistances(self.crop if not self.crop.all() else np.zeros_like(self.crop))
        self.farthest = self.distances.first_max()

    def farthest_point(self) -> tuple[int, int]:
        """(x, y) of the first pixel farthest from the background (the centre when there is none)."""
        if self.farthest is None:
            rows, cols = self.crop.shape
            return self.left + (cols - 1) // 2, self.top + (rows - 1) // 2
        row, col, _ = self.farthest
        return self.left + col, self.top + row

    def for_mask_prompt(self) -> MaskCrop:
        """The crop, its distances to the background, their peak and the mask's area."""
        peak = np.float32(0.0 if self.farthest is None else self.farthest[2])
        return MaskCrop(self.crop, (self.top, self.left), self.distances, peak, int(np.count_nonzero(self.crop)))


def negative_point(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int] | None:
    """(x, y) of the background pixel farthest from the mask within the box's rows y1..y2-1 and
    columns x1..x2-1 (the reference's end-exclusive slice); None when that region has no background."""
    x1, y1, x2, y2 = box
    if x2 == x1 or y2 == y1:
        return None
    background = ~mask[y1 : y2 + 1, x1 : x2 + 1]  # every mask pixel lies in the box
    farthest = first_farthest(background, y2 - y1, x2 - x1)
    if farthest is None:
        return None
    row, col = farthest
    return x1 + col, y1 + row


class SimilarityField:
    """CEBox's similarity test, set up once per image.

    The reference upsamples the valid part of the embedding bilinearly to the image size,
    L2-normalises every pixel's vector and compares it with the mask's mean embedding. Bilinear
    interpolation is linear, so a pixel's dot product with the query is the interpolation of the
    grid's dot products, and its squared norm a quadratic form of the four neighbouring grid
    vectors: the Gram maps below make both cheap to evaluate on the strips only.
    """

    def __init__(
        self,
        embeddings: torch.Tensor | np.ndarray,
        original_size: tuple[int, int],
        input_size: tuple[int, int] | None = None,
        geometry: Geometry = SAM_GEOMETRY,
    ) -> None:
        grid = np.asarray(torch.as_tensor(embeddings).detach().float().cpu())[0]
        side = geometry.embedding_size
        if grid.shape[-2:] != (side, side):
            raise ValueError(f"embeddings are {grid.shape[-2:]}, the model's embedding grid is {side} x {side}")
        height, width = original_size
        rows, cols = valid_embedding_size(height, width, side, input_size, geometry.image_size)
        padded = np.zeros((grid.shape[0], rows + 2, cols + 2))
        padded[:, :rows, :cols] = grid[:, :rows, :cols]
        self.vectors = padded[:, :rows, :cols]
        here, right, down, diagonal = padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]
        self.norms = np.einsum("cij,cij->ij", here, here)
        self.across = np.einsum("cij,cij->ij", here, right)
        self.downward = np.einsum("cij,cij->ij", here, down)
        self.diagonals = np.einsum("cij,cij->ij", here, diagonal) + np.einsum("cij,cij->ij", right, down)
        self.row_taps = _folded_taps(rows, height)
        self.col_taps = _folded_taps(cols, width)
        self.sample_rows = nearest_indices(height, rows)
        self.sample_cols = nearest_indices(width, cols)

    def query_scores(self, mask: np.ndarray) -> np.ndarray | None:
        """Grid vectors' dot products with the mask's unit mean embedding (taken over the grid cells
        its nearest-resized copy covers), zero-padded like the Gram maps; None if it covers none."""
        covered = mask[np.ix_(self.sample_rows, self.sample_cols)]
        if not covered.any():
            return None
        mean = self.vectors[:, covered].mean(axis=1)
        scores = np.zeros(self.norms.shape)
        scores[:-1, :-1] = np.einsum("c,cij->ij", mean / np.linalg.norm(mean), self.vectors)
        return scores

    def count_similar(self, scores: np.ndarray, rows: slice, cols: slice) -> int:
        """Pixels of the strip rows x cols whose unit vector has a dot product > 0.5 with the query
        (`scores` from `query_scores`)."""
        r0, r1, a0, a1 = (part[rows, None] for part in self.row_taps)
        c0, c1, b0, b1 = (part[cols][None, :] for part in self.col_taps)
        dot = a0 * (b0 * scores[r0, c0] + b1 * scores[r0, c1]) + a1 * (b0 * scores[r1, c0] + b1 * scores[r1, c1])
        norm2 = (
            a0 * a0 * (b0 * b0 * self.norms[r0, c0] + b1 * b1 * self.norms[r0, c1] + 2 * b0 * b1 * self.across[r0, c0])
            + a1
            * a1
            * (b0 * b0 * self.norms[r1, c0] + b1 * b1 * self.norms[r1, c1] + 2 * b0 * b1 * self.across[r1, c0])
            + 2
            * a0
            * a1
            * (b0 * b0 * self.downward[r0, c0] + b1 * b1 * self.downward[r0, c1] + b0 * b1 * self.diagonals[r0, c0])
        )
        return int(np.count_nonzero(dot > SIMILARITY_THRESHOLD * np.sqrt(np.maximum(norm2, 0.0))))


def _folded_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps with i1 = i0 + 1 always (a repeated edge index folds its weight into w0)."""
    first, second, w0, w1 = linear_taps(size_in, size_out)
    w0, w1 = w0.astype(np.float64), w1.astype(np.float64)
    repeated = second == first
    return first, first + 1, np.where(repeated, w0 + w1, w0), np.where(repeated, 0.0, w1)


def elastic_box(
    box: tuple[int, int, int, int],
    count_similar: Callable[[slice, slice], int],
    image_size: tuple[int, int],
    threshold: float,
    passes: int,
) -> tuple[tuple[int, int, int, int], bool]:
    """CEBox: move each side of `box` outward when the strip beyond it is mostly like the object.

    `count_similar(rows, cols)` counts similar pixels of a strip. Each pass tests the four sides
    against the box it started from; a pass that moves nothing ends the expansion.
    """
    height, width = image_size
    expanded = False
    for _ in range(passes):
        x1, y1, x2, y2 = box
        if x2 == x1 or y2 == y1:
            break
        step_y, step_x = min(0.1 * (y2 - y1), 10), min(0.1 * (x2 - x1), 10)
        new_x1, new_x2, new_y1, new_y2 = int(x1 - step_x), int(x2 + step_x), int(y1 - step_y), int(y2 + step_y)
        strips = (
            (0 < new_x1 < x1, slice(y1, y2), slice(new_x1, x1)),
            (x2 < new_x2 < width, slice(y1, y2), slice(x2, new_x2)),
            (0 < new_y1 < y1, slice(new_y1, y1), slice(x1, x2)),
            (y2 < new_y2 < height, slice(y2, new_y2), slice(x1, x2)),
        )
        moved = [
            usable and count_similar(rows, cols) / ((rows.stop - rows.start) * (cols.stop - cols.start)) > threshold
            for usable, rows, cols in strips
        ]
        if not any(moved):
            break
        box = (
            new_x1 if moved[0] else x1,
            new_y1 if moved[2] else y1,
            new_x2 if moved[1] else x2,
            new_y2 if moved[3] else y2,
        )
        expanded = True
    return box, expanded


class PromptMiner:
    """Mines the prompts of one image's masks; per-image setup is done once, here.

    `embeddings` (1, C, E, E), E the geometry's embedding grid, is needed only for CEBox
    (`box_expand_threshold` > 0); `rng` only for the "random" point strategy. `geometry` is the
    model's (`Geometry.of(model)`; SAM's by default).
    """

    def __init__(
        self,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        embeddings: torch.Tensor | np.ndarray | None = None,
        *,
        use_negative_point: bool = True,
        use_mask: bool = True,
        box_expand_threshold: float = 0.0,
        box_expand_passes: int = 1,
        gamma: float = 4.0,
        strength: float = 30.0,
        point_strategy: PointStrategy = "distance",
        rng: np.random.Generator | None = None,
        geometry: Geometry = SAM_GEOMETRY,
    ) -> None:
        if point_strategy not in POINT_STRATEGIES:
            raise ValueError(f"point_strategy must be one of {', '.join(POINT_STRATEGIES)}, got {point_strategy!r}")
        if box_expand_threshold > 0 and embeddings is None:
            raise ValueError("CEBox (box_expand_threshold > 0) needs the image embeddings")
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size, self.geometry = (int(input_size[0]), int(input_size[1])), geometry
        self.use_negative_point = use_negative_point
        self.threshold, self.passes = box_expand_threshold, box_expand_passes
        self.gamma, self.strength = gamma, strength
        self.point_strategy = point_strategy
        self.rng = rng if rng is not None else np.random.default_rng()
        self.similarity = (
            SimilarityField(embeddings, self.original_size, input_size, geometry) if box_expand_threshold > 0 else None
        )
        self.grid = (
            MaskPromptGrid(self.original_size, input_size, geometry.image_size, geometry.mask_input_size)
            if use_mask
            else None
        )

    def mine(self, masks: np.ndarray) -> Prompts:
        """Prompts for N x H x W bool masks. An empty mask gets padding points, a zero box and an
        all-background mask prompt (it is not meant to be decoded)."""
        if masks.shape[1:] != self.original_size:
            raise ValueError(f"masks are {masks.shape[1:]}, the miner was set up for {self.original_size}")
        count, slots = len(masks), 2 if self.use_negative_point else 1
        points = np.zeros((count, slots, 2), dtype=np.int64)
        labels = np.full((count, slots), NOT_A_POINT, dtype=np.int64)
        boxes = np.zeros((count, 4), dtype=np.int64)
        expanded = np.zeros(count, dtype=bool)
        mask_inputs = None
        if self.grid is not None:
            side = self.grid.size
            mask_inputs = np.full((count, 1, side, side), -self.strength, dtype=np.float32)
        for index, mask in enumerate(masks):
            box = bounding_box(mask)
            if box is None:
                continue
            distances = _DistanceCrop(mask, box)
            points[index, 0], labels[index, 0] = self._positive(mask, box, distances), POSITIVE
            if self.use_negative_point and (negative := negative_point(mask, box)) is not None:
                points[index, 1], labels[index, 1] = negative, NEGATIVE
            boxes[index], expanded[index] = self._box(mask, box)
            if mask_inputs is not None:
                amplitude = 1.0 if expanded[index] else self.strength
                self.grid.prompt(distances.for_mask_prompt(), box, self.gamma, amplitude, mask_inputs[index, 0])
        return Prompts(points, labels, boxes, expanded, mask_inputs)

    def _positive(self, mask: np.ndarray, box: tuple[int, int, int, int], distances: _DistanceCrop) -> tuple[int, int]:
        x1, y1, x2, y2 = box
        if self.point_strategy == "box_center":
            return (x1 + x2) // 2, (y1 + y2) // 2
        if self.point_strategy == "random":
            rows, cols = np.nonzero(mask[y1 : y2 + 1, x1 : x2 + 1])
            pick = int(self.rng.integers(len(rows)))
            return x1 + int(cols[pick]), y1 + int(rows[pick])
        return distances.farthest_point()

    def _box(self, mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[tuple[int, int, int, int], bool]:
        if self.similarity is None:
            return box, False
        scores = self.similarity.query_scores(mask)
        if scores is None:
            return box, False
        count = partial(self.similarity.count_similar, scores)
        return elastic_box(box, count, self.original_size, self.threshold, self.passes)
