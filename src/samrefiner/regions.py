"""Semantic label maps: split each class into instance-like regions (split-then-merge), paint them back.

SPEC.md section 4 (the paper's split-then-merge, STM). Label 0 is background and 255 is void;
neither is a class.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

BACKGROUND = 0
VOID = 255
MIN_COMPONENT_PIXELS = 5
_WINDOW = 256  # later components tested at once after a merge


def split_then_merge(label_map: np.ndarray, mu: float = 0.5) -> list[tuple[int, np.ndarray]]:
    """The regions of a label map as (class id, H x W bool mask), classes ascending.

    Per class: 8-connected components, components under 5 px dropped (unless the class has a
    single component), then nearby components merged (SPEC.md section 4, threshold `mu`).
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"a label map must be 2-D, got shape {label_map.shape}")
    regions: list[tuple[int, np.ndarray]] = []
    for class_id in np.unique(label_map).tolist():
        if class_id in (BACKGROUND, VOID):
            continue
        regions.extend((class_id, mask) for mask in _class_regions(label_map == class_id, mu))
    return regions


def paint_back(label_map: np.ndarray, class_ids: list[int], result: Any) -> np.ndarray:
    """`label_map` redrawn from the refiner's `result` for regions of classes `class_ids`, in the
    rules of `samrefiner.refine.refine_label_map` (`result` is unused when there are no regions)."""
    label_map = np.asarray(label_map)
    refined = np.full_like(label_map, BACKGROUND)
    if class_ids:
        scores = np.asarray(result.scores, dtype=np.float64)
        painting_order = np.argsort(np.where(np.isnan(scores), -np.inf, scores), kind="stable")
        for index in painting_order:
            refined[np.asarray(result.masks[index], dtype=bool)] = class_ids[index]
    refined[label_map == VOID] = VOID
    return refined


def _class_regions(class_mask: np.ndarray, mu: float) -> list[np.ndarray]:
    """Split one class mask into components and merge them, in the reference's order."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(class_mask.astype(np.uint8), connectivity=8)
    if count == 2:  # a single component is kept as it is, whatever its size
        return [class_mask.copy()]
    groups = _merge_components(stats[1:].astype(np.int64), mu)
    group_of_label = np.zeros(count, dtype=np.int32)
    for group_number, members in enumerate(groups, start=1):
        group_of_label[members + 1] = group_number
    grouped = group_of_label[labels]
    return [grouped == group_number for group_number in range(1, len(groups) + 1)]


def _merge_components(stats: np.ndarray, mu: float) -> list[np.ndarray]:
    """Indices of the components in each merged group, groups in the reference's order.

    `stats`: OpenCV's x, y, w, h, area per component. The reference's sequential rule, exactly:
    for i in order and j > i, group(j) merges into group(i) when `_merge_test` passes on the two
    groups as they are at that moment (a merge grows group(i)'s box, which can enable later j).
    Groups form a disjoint-set forest flattened after every union (`name`: each component's group,
    named after its first component), and each step tests group(i) against all later
    components at once (in windows, doubling while none passes): the first that passes is merged, then the
    test resumes after it, so the
    result is that of the pair-by-pair loop. Groups come out sorted by name, as the reference's
    final `np.unique` over its relabelled map gives them.
    """
    count = len(stats)
    x1, y1 = stats[:, 0].copy(), stats[:, 1].copy()
    x2, y2 = x1 + stats[:, 2] - 1, y1 + stats[:, 3] - 1
    area = stats[:, 4].copy()
    name = np.where(area >= MIN_COMPONENT_PIXELS, np.arange(count), -1)
    merges, settled = 0, {}  # merges so far; per group: (merges, last merged j) when its scan ended
    for i in range(count):
        a = int(name[i])
        if a < 0:
            continue
        done_merges, last_merged = settled.get(a, (-1, count))
        if done_merges == merges and i >= last_merged:
            continue  # every j > i failed against this very state of every group: they fail again
        last_merged = i
        start, window = i + 1, _WINDOW
        while start < count:
            b = name[start : start + window]
            candidates = (b >= 0) & (b != a)
            b = np.where(candidates, b, a)  # placeholders, masked out below
            passes = candidates & _merge_test(
                (x1[a], y1[a], x2[a], y2[a], area[a]), (x1[b], y1[b], x2[b], y2[b], area[b]), mu
            )
            if not passes.any():
                start, window = start + window, 2 * window
                continue
            j = start + int(np.argmax(passes))
            merged = int(name[j])
            x1[a], y1[a] = min(x1[a], x1[merged]), min(y1[a], y1[merged])
            x2[a], y2[a] = max(x2[a], x2[merged]), max(y2[a], y2[merged])
            area[a] += area[merged]
            name[name == merged] = a
            merges, last_merged = merges + 1, j
            start, window = j + 1, _WINDOW
        settled[a] = (merges, last_merged)
    return [np.flatnonzero(name == kept) for kept in np.unique(name[name >= 0])]


def _merge_test(a: tuple, b: tuple, mu: float) -> np.ndarray:
    """The reference's merge test of group `a` against the groups `b` (arrays of x1, y1, x2, y2,
    area); the merged box area has no +1, unlike the groups' own. Exact float arithmetic of the
    reference (float64 divisions and products of integers)."""
    ax1, ay1, ax2, ay2, a_area = a
    bx1, by1, bx2, by2, b_area = b
    a_box = (ax2 - ax1 + 1) * (ay2 - ay1 + 1)
    b_box = (bx2 - bx1 + 1) * (by2 - by1 + 1)
    merged_box = (np.maximum(ax2, bx2) - np.minimum(ax1, bx1)) * (np.maximum(ay2, by2) - np.minimum(ay1, by1))
    degenerate = merged_box == 0  # the reference divides by zero here, and inf passes both tests
    safe_box = np.where(degenerate, 1, merged_box)
    fill_threshold = np.minimum(mu, np.minimum(a_area / a_box, b_area / b_box) - 0.1)
    return degenerate | ((a_box + b_box > mu * safe_box) & ((a_area + b_area) / safe_box > fill_threshold))
