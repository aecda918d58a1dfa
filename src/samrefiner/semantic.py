"""Semantic label maps: split each class into instance-like regions, refine them, merge back.

SPEC.md section 4 (the paper's split-then-merge, STM). Label 0 is background and 255 is void;
neither is a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from samrefiner.refine import Refiner

BACKGROUND = 0
VOID = 255
MIN_COMPONENT_PIXELS = 5


@dataclass
class _Group:
    """Merged components: inclusive box (x1, y1, x2, y2) over all their pixels, pixel count."""

    x1: int
    y1: int
    x2: int
    y2: int
    area: int

    @property
    def box_area(self) -> int:
        return (self.x2 - self.x1 + 1) * (self.y2 - self.y1 + 1)

    def union(self, other: _Group) -> _Group:
        return _Group(
            min(self.x1, other.x1),
            min(self.y1, other.y1),
            max(self.x2, other.x2),
            max(self.y2, other.y2),
            self.area + other.area,
        )


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


def refine_label_map(
    refiner: Refiner, image: np.ndarray | str | Path, label_map: np.ndarray
) -> np.ndarray:
    """Refine every split-then-merge region of `label_map` as an instance and paint them back.

    Refined pixels take their region's class; where regions overlap, the one with the higher
    predicted IoU wins (the later region on a tie; a region the refiner returned unrefined, with
    score NaN, loses); pixels no region claims become background; void pixels of the input stay
    void. Same shape and dtype as `label_map`.
    """
    label_map = np.asarray(label_map)
    regions = split_then_merge(label_map)
    result = refiner.refine(image, np.stack([mask for _, mask in regions])) if regions else None
    return paint_back(label_map, [class_id for class_id, _ in regions], result)


def paint_back(label_map: np.ndarray, class_ids: list[int], result: Any) -> np.ndarray:
    """`label_map` redrawn from the refiner's `result` for regions of classes `class_ids`, in the
    rules of `refine_label_map` (`result` is unused when there are no regions)."""
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
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        class_mask.astype(np.uint8), connectivity=8
    )
    if count == 2:  # a single component is kept as it is, whatever its size
        return [class_mask.copy()]
    components = [
        _Group(int(x), int(y), int(x + w - 1), int(y + h - 1), int(area))
        for x, y, w, h, area in stats[1:]
    ]
    groups = _merge_components(components, mu)
    group_of_label = np.zeros(count, dtype=np.int32)
    for group_number, members in enumerate(groups, start=1):
        group_of_label[np.asarray(members) + 1] = group_number
    grouped = group_of_label[labels]
    return [grouped == group_number for group_number in range(1, len(groups) + 1)]


def _merge_components(components: list[_Group], mu: float) -> list[list[int]]:
    """Indices of the components in each merged group, groups in the reference's order.

    Each group is named after one of its components (initially its own); when group B merges
    into group A every member takes A's name, and groups come out sorted by name, as the
    reference's final `np.unique` over its relabelled map does.
    """
    name_of: list[int | None] = [
        index if component.area >= MIN_COMPONENT_PIXELS else None
        for index, component in enumerate(components)
    ]
    groups = {index: components[index] for index in name_of if index is not None}
    for i in range(len(components)):
        name_i = name_of[i]
        if name_i is None:
            continue
        for j in range(i + 1, len(components)):
            name_j = name_of[j]
            if name_j is None or name_j == name_i:
                continue
            if _should_merge(groups[name_i], groups[name_j], mu):
                groups[name_i] = groups[name_i].union(groups.pop(name_j))
                name_of = [name_i if name == name_j else name for name in name_of]
    return [[index for index, name in enumerate(name_of) if name == kept] for kept in sorted(groups)]


def _should_merge(a: _Group, b: _Group, mu: float) -> bool:
    """The reference's merge test; the merged box area has no +1, unlike the groups' own."""
    merged = a.union(b)
    merged_box_area = (merged.x2 - merged.x1) * (merged.y2 - merged.y1)
    if merged_box_area == 0:
        return True  # the reference divides by zero here, and inf passes both tests
    fill_threshold = min(mu, min(a.area / a.box_area, b.area / b.box_area) - 0.1)
    return (
        a.box_area + b.box_area > mu * merged_box_area
        and merged.area / merged_box_area > fill_threshold
    )
