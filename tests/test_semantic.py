"""Split-then-merge against the reference's regions and hand-made maps; label-map write-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DATA, FIXTURES

from samrefiner.io.labelmaps import read_label_map
from samrefiner.semantic import split_then_merge

COCO_MAPS = sorted((DATA / "coco_stuff" / "pngs").glob("*.png"))


def _reference_regions() -> dict[str, np.ndarray]:
    """stm_reference.npz unpacked: "<map>_class<C>" -> R x H x W bool."""
    stored = np.load(FIXTURES / "stm_reference.npz")
    regions = {}
    for key in stored.files:
        if key.endswith("_bits"):
            name = key[: -len("_bits")]
            shape = tuple(stored[f"{name}_shape"])
            bits = np.unpackbits(stored[key])[: int(np.prod(shape))]
            regions[name] = bits.reshape(shape).astype(bool)
    return regions


def _by_class(regions: list[tuple[int, np.ndarray]]) -> dict[int, list[np.ndarray]]:
    grouped: dict[int, list[np.ndarray]] = {}
    for class_id, mask in regions:
        grouped.setdefault(class_id, []).append(mask)
    return grouped


def test_regions_equal_the_reference_for_every_coco_stuff_map() -> None:
    reference = _reference_regions()
    assert len(COCO_MAPS) == 6
    compared = set()
    for path in COCO_MAPS:
        regions = split_then_merge(read_label_map(path)[0])
        class_ids = [class_id for class_id, _ in regions]
        assert class_ids == sorted(class_ids)
        for class_id, masks in _by_class(regions).items():
            name = f"{path.stem}_class{class_id}"
            assert np.array_equal(np.stack(masks), reference[name]), name
            compared.add(name)
    assert compared == set(reference)
    # the fixture exercises merging: some classes have several regions, some dropped specks
    assert max(len(masks) for masks in reference.values()) == 4


def _blank(height: int = 40, width: int = 80) -> np.ndarray:
    return np.zeros((height, width), dtype=np.uint8)


def test_two_nearby_blobs_of_one_class_merge() -> None:
    labels = _blank()
    labels[0:10, 0:10] = 3
    labels[0:10, 12:22] = 3  # box areas 100 + 100 > 0.5 * 21 * 9, fill 200 / 189 > 0.5
    regions = split_then_merge(labels)
    assert len(regions) == 1
    class_id, mask = regions[0]
    assert class_id == 3 and type(class_id) is int
    assert np.array_equal(mask, labels == 3)


def test_two_distant_blobs_of_one_class_stay_apart() -> None:
    labels = _blank()
    labels[0:10, 0:10] = 3
    labels[28:38, 60:70] = 3  # 200 px in a 69 x 37 merged box: far under half of it
    regions = split_then_merge(labels)
    assert [class_id for class_id, _ in regions] == [3, 3]
    first, second = (mask for _, mask in regions)
    assert first.sum() == second.sum() == 100
    assert first[0:10, 0:10].all() and second[28:38, 60:70].all()


def test_a_four_pixel_speck_beside_a_large_region_is_dropped() -> None:
    labels = _blank()
    labels[0:20, 0:20] = 5
    labels[0:2, 22:24] = 5  # 4 px, not 8-connected to the square; would merge if it were kept
    labels[30:31, 40:45] = 5  # 5 px: kept, far enough to stay its own region
    regions = split_then_merge(labels)
    assert len(regions) == 2
    square, line = (mask for _, mask in regions)
    assert square.sum() == 400 and square[0:20, 0:20].all()
    assert line.sum() == 5 and line[30, 40:45].all()
    assert not any(mask[0:2, 22:24].any() for _, mask in regions)


def test_a_class_with_a_single_component_is_kept_whatever_its_size() -> None:
    labels = _blank()
    labels[5, 5] = 9
    assert [(class_id, int(mask.sum())) for class_id, mask in split_then_merge(labels)] == [(9, 1)]


def test_void_and_background_are_never_classes() -> None:
    labels = _blank()
    labels[:, :40] = 255
    assert split_then_merge(labels) == []
    labels[10:20, 50:60] = 2
    labels[25:35, 50:60] = 1
    assert [class_id for class_id, _ in split_then_merge(labels)] == [1, 2]


def test_a_merged_region_stands_for_its_group_and_groups_keep_the_reference_names() -> None:
    """A (label 1) merges with C (label 4); B (label 3) misses A and C alone but not A+C.

    B then absorbs the group under B's name, so the far region D (label 2) comes out first.
    """
    labels = _blank(30, 220)
    labels[0:10, 0:10] = 7  # A
    labels[0:10, 200:210] = 7  # D
    labels[2:22, 15:17] = 7  # B: box areas with A 140, not > 0.5 * 16 * 21; with C not > 152
    labels[12:22, 0:10] = 7  # C: with A 200 > 0.5 * 9 * 21; B with A+C 260 > 0.5 * 16 * 21
    # the numbering comes from OpenCV (not plain first-pixel order, so check it)
    component_ids = cv2.connectedComponents((labels == 7).astype(np.uint8), connectivity=8)[1]
    assert [component_ids[y, x] for y, x in [(0, 0), (0, 200), (2, 15), (12, 0)]] == [1, 2, 3, 4]

    regions = split_then_merge(labels)
    assert len(regions) == 2
    far, merged = (mask for _, mask in regions)
    assert np.array_equal(far, (labels == 7) & (np.arange(220) >= 200))
    assert np.array_equal(merged, (labels == 7) & (np.arange(220) < 200))


def test_components_in_one_row_merge_as_in_the_reference() -> None:
    """The merged box of two one-row components has area 0 (no +1): the reference merges them."""
    labels = _blank()
    labels[5, 0:10] = 4
    labels[5, 60:70] = 4
    assert len(split_then_merge(labels)) == 1


def test_a_lower_threshold_merges_more() -> None:
    labels = _blank()
    labels[0:10, 0:10] = 3
    labels[0:10, 40:50] = 3  # 200 px in a 49 x 9 merged box: under 0.5 of it, over 0.3
    assert len(split_then_merge(labels)) == 2
    assert len(split_then_merge(labels, mu=0.3)) == 1


def test_a_label_map_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError, match="2-D"):
        split_then_merge(np.zeros((4, 4, 3), dtype=np.uint8))
