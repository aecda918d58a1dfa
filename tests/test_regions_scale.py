"""Split-then-merge at scale: a 1000-region map in well under a second, and the same regions as a
brute-force, pixel-by-pixel version of SPEC.md section 4's sequential rule."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from samrefiner.regions import split_then_merge


def _scattered_blobs(cells: int, cell: int, classes: int, seed: int) -> np.ndarray:
    """A `cells` x `cells` grid of cells, each holding one random rectangle (1-9 px a side, a few
    under 5 px) of a random class, separated by at least one background pixel."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((cells * cell, cells * cell), dtype=np.uint8)
    for row in range(cells):
        for column in range(cells):
            height, width = rng.integers(1, cell - 2, size=2)
            top = row * cell + rng.integers(0, cell - 1 - height)
            left = column * cell + rng.integers(0, cell - 1 - width)
            labels[top : top + height, left : left + width] = rng.integers(1, classes + 1)
    return labels


def _clusters(cells: int, cell: int, classes: int, seed: int) -> np.ndarray:
    """A `cells` x `cells` grid of cells, each with up to four rectangles (1-3 px a side) of one
    random class in a 2 x 2 pattern: clusters that merge inside and mostly stay apart."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((cells * cell, cells * cell), dtype=np.uint8)
    for row in range(cells):
        for column in range(cells):
            class_id = rng.integers(1, classes + 1)
            for dy in (0, 4):
                for dx in (0, 4):
                    height, width = rng.integers(1, 4, size=2)
                    top, left = row * cell + dy, column * cell + dx
                    labels[top : top + height, left : left + width] = class_id
    return labels


def _brute_force(label_map: np.ndarray, mu: float = 0.5) -> list[tuple[int, np.ndarray]]:
    """SPEC.md section 4 literally: groups as pixel masks, boxes recomputed from the pixels after
    each merge, a relabelled component map, regions in order of their final label."""
    regions = []
    for class_id in sorted(set(np.unique(label_map).tolist()) - {0, 255}):
        class_mask = label_map == class_id
        count, components = cv2.connectedComponents(class_mask.astype(np.uint8), connectivity=8)
        if count == 2:
            regions.append((class_id, class_mask))
            continue
        owner = components.copy()
        for label in range(1, count):
            if (components == label).sum() < 5:
                owner[components == label] = 0
        for i in range(1, count):
            for j in range(i + 1, count):
                name_i, name_j = _owner_of(owner, components, i), _owner_of(owner, components, j)
                if name_i is None or name_j is None or name_i == name_j:
                    continue
                a, b = owner == name_i, owner == name_j
                if _passes(a, b, mu):
                    owner[b] = name_i
        regions += [(class_id, owner == name) for name in np.unique(owner) if name != 0]
    return regions


def _owner_of(owner: np.ndarray, components: np.ndarray, label: int) -> int | None:
    names = owner[components == label]
    return int(names[0]) if names[0] != 0 else None


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


def _passes(a: np.ndarray, b: np.ndarray, mu: float) -> bool:
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = _box(a), _box(b)
    box_a, box_b = (ax2 - ax1 + 1) * (ay2 - ay1 + 1), (bx2 - bx1 + 1) * (by2 - by1 + 1)
    merged = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    if merged == 0:
        return True
    threshold = min(mu, min(a.sum() / box_a, b.sum() / box_b) - 0.1)
    return box_a + box_b > mu * merged and (a.sum() + b.sum()) / merged > threshold


@pytest.mark.parametrize(
    "labels",
    [_scattered_blobs(cells=9, cell=8, classes=2, seed=seed) for seed in (0, 1)]
    + [_clusters(cells=7, cell=14, classes=2, seed=seed) for seed in (0, 1)],
)
def test_regions_equal_the_brute_force_rule(labels: np.ndarray) -> None:
    expected = _brute_force(labels)
    regions = split_then_merge(labels)
    assert [class_id for class_id, _ in regions] == [class_id for class_id, _ in expected]
    for (_, mask), (_, wanted) in zip(regions, expected):
        assert np.array_equal(mask, wanted)
    # the maps exercise merging (fewer regions than components) and the size filter
    components = sum(cv2.connectedComponents((labels == c).astype(np.uint8), connectivity=8)[0] - 1 for c in (1, 2))
    assert len(regions) < components - 5


def test_a_merge_enabled_by_an_earlier_merge_is_made() -> None:
    """C fails the test against A alone but passes against A+B's grown box (A, B, C in that order)."""
    labels = np.zeros((12, 50), dtype=np.uint8)
    a, b, c = (np.zeros_like(labels, dtype=bool) for _ in range(3))
    a[0:10, 0:10], b[0:10, 20:30], c[0:10, 40:50] = True, True, True
    labels[a | b | c] = 1
    assert not _passes(a, c, 0.5) and _passes(a, b, 0.5) and _passes(a | b, c, 0.5)
    regions = split_then_merge(labels)
    assert len(regions) == 1 and np.array_equal(regions[0][1], a | b | c)


def test_a_thousand_region_map_takes_well_under_a_second() -> None:
    labels = _clusters(cells=16, cell=24, classes=1, seed=3)
    components = cv2.connectedComponents(labels, connectivity=8)[0] - 1
    assert components == 1024
    start = time.perf_counter()
    regions = split_then_merge(labels)
    seconds = time.perf_counter() - start
    print(f"{components} components -> {len(regions)} regions in {seconds:.3f} s")  # pytest -rP shows it
    assert 100 < len(regions) < components  # merges happen, many regions stay
    assert seconds < 1.0, f"{seconds:.2f} s"
