"""Split-then-merge against the reference's regions and hand-made maps; label-map write-back."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, FIXTURES
from samrefiner.io.images import read_image
from samrefiner.io.labelmaps import read_label_map, write_label_map
from samrefiner.models.base import Decoded, Encoding, PromptableModel
from samrefiner.refine import Refiner, refine_label_map
from samrefiner.regions import split_then_merge

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


class _FixedRefiner:
    """Stands in for Refiner.refine: records its call, answers with preset masks and scores."""

    def __init__(self, masks: np.ndarray, scores: list[float]) -> None:
        self.result = SimpleNamespace(masks=masks, scores=np.asarray(scores))
        self.calls: list[tuple[object, np.ndarray]] = []

    def refine(self, image: object, masks: np.ndarray) -> SimpleNamespace:
        self.calls.append((image, masks))
        return self.result


def _two_class_map() -> np.ndarray:
    labels = np.zeros((30, 40), dtype=np.uint8)
    labels[0:10, 0:10] = 1
    labels[0:10, 20:30] = 2
    labels[29, :] = 255
    return labels


def _refined_masks() -> np.ndarray:
    """Class 1 grown over the left half of class 2 and into the void row; class 2 shrunk."""
    masks = np.zeros((2, 30, 40), dtype=bool)
    masks[0, 0:10, 0:25] = True
    masks[0, 25:30, 0:5] = True
    masks[1, 0:8, 20:30] = True
    return masks


@pytest.mark.parametrize(("scores", "overlap_class"), [([0.9, 0.6], 1), ([0.6, 0.9], 2)])
def test_write_back_gives_overlaps_to_the_higher_predicted_iou(scores: list[float], overlap_class: int) -> None:
    labels = _two_class_map()
    refiner = _FixedRefiner(_refined_masks(), scores)
    refined = refine_label_map(refiner, "image.jpg", labels)

    ((image, masks),) = refiner.calls
    assert image == "image.jpg"
    assert np.array_equal(masks, np.stack([labels == 1, labels == 2]))
    assert refined.dtype == labels.dtype and refined.shape == labels.shape
    assert (refined[0:8, 20:25] == overlap_class).all()
    assert (refined[0:10, 0:20] == 1).all() and (refined[0:8, 25:30] == 2).all()
    assert (refined[25:29, 0:5] == 1).all()
    assert (refined[29] == 255).all()  # void stays void although class 1 claims it
    assert (refined[8:10, 25:30] == 0).all()  # given up by class 2, claimed by nobody
    claimed = np.zeros_like(labels, dtype=bool)
    claimed[0:10, 0:25] = claimed[0:8, 20:30] = claimed[25:30, 0:5] = claimed[29] = True
    assert (refined[~claimed] == 0).all()


def test_a_map_without_classes_comes_back_as_background_and_void() -> None:
    labels = np.zeros((6, 6), dtype=np.uint16)
    labels[0] = 255
    refiner = _FixedRefiner(np.zeros((0, 6, 6), dtype=bool), [])
    refined = refine_label_map(refiner, np.zeros((6, 6, 3), dtype=np.uint8), labels)
    assert refiner.calls == []
    assert refined.dtype == np.uint16 and np.array_equal(refined, labels)


def test_an_unrefined_region_loses_overlaps() -> None:
    labels = _two_class_map()
    refined = refine_label_map(_FixedRefiner(_refined_masks(), [float("nan"), 0.1]), "image.jpg", labels)
    assert (refined[0:8, 20:25] == 2).all()


class _EchoModel(PromptableModel):
    """A stand-in SAM for 256 x 256 images whose chosen candidate is the mask prompt itself.

    Why the round trip is exact: for a 256 x 256 image SAM's input frame is 1024 x 1024 with no
    padding, and the refiner's mask prompt (coarse mask as +/-1, bilinear to 1024, bilinear back
    to 256) weighs each pixel's own value 0.77 against 0.23 for its neighbours, so its sign is the
    coarse mask pixel for pixel; the Gaussian factor is positive and keeps the sign. The stand-in
    decodes that prompt as the logits of candidate 1 (candidates 0 and 2 are the inverted and the
    full mask, scored lower), and its upscale is the identity, which is exact because the
    low-resolution grid IS the image grid at this size. So the refiner returns every region
    unchanged, through every cascade iteration, and whatever differs from the input label map
    comes from splitting, merging or writing back.
    """

    kind, name, device = "sam", "echo", torch.device("cpu")

    def encode(self, image: np.ndarray) -> Encoding:
        assert image.shape == (256, 256, 3)
        return Encoding(torch.zeros(1, 256, 64, 64), (256, 256), (1024, 1024))

    def decode(self, encoding, points, labels, boxes, mask_inputs, chunk_size=64) -> Decoded:
        echo = mask_inputs.float()
        logits = torch.cat([-echo, echo, torch.ones_like(echo)], dim=1)
        scores = torch.tensor([[0.2, 0.9, 0.5]]).repeat(len(echo), 1) - 0.01 * torch.arange(len(echo))[:, None]
        return Decoded(logits, scores)

    def upscale(self, low_res_logits: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        return low_res_logits

    @property
    def iou_head(self) -> torch.nn.Module:
        return torch.nn.Identity()


def _hand_made_map() -> np.ndarray:
    """Background, void, a merged pair of blobs, two apart, a thin line, a diagonal stroke."""
    labels = np.zeros((256, 256), dtype=np.uint8)
    labels[10:60, 10:60] = 4
    labels[10:60, 63:100] = 4  # merges with the square above
    labels[150:200, 20:40] = 9
    labels[30:40, 200:240] = 9  # far from the other class-9 blob: a region of its own
    labels[100, 100:180] = 12  # one pixel thick
    for step in range(60):
        labels[120 + step, 190 + step // 2 : 193 + step // 2] = 21
    labels[220:256, 0:256] = 255
    labels[230:240, 30:50] = 9  # class pixels inside the void band's rectangle
    return labels


def test_echo_round_trip_gives_back_the_hand_made_map_exactly(tmp_path) -> None:
    labels = _hand_made_map()
    regions = split_then_merge(labels)
    assert [class_id for class_id, _ in regions] == [4, 9, 9, 9, 12, 21]
    assert regions[0][1].sum() == (labels == 4).sum()

    source, target = tmp_path / "map.png", tmp_path / "refined" / "map.png"
    palette = [value for index in range(256) for value in (index, 255 - index, (7 * index) % 256)]
    write_label_map(source, labels, palette)
    label_map, read_palette = read_label_map(source)
    refiner = Refiner(_EchoModel())
    refined = refiner.refine_label_map(np.zeros((256, 256, 3), dtype=np.uint8), label_map)
    write_label_map(target, refined, read_palette)

    assert refined.dtype == np.uint8
    assert np.array_equal(refined, labels)
    written, written_palette = read_label_map(target)
    assert written_palette == palette and np.array_equal(written, labels)


def test_echo_round_trip_gives_back_a_coco_stuff_crop_exactly() -> None:
    """256 x 256 of map 1: seven classes in eight regions, background and void, no specks."""
    window = (slice(96, 352), slice(96, 352))
    labels = read_label_map(DATA / "coco_stuff" / "pngs" / "1.png")[0][window]
    image = read_image(DATA / "coco_stuff" / "imgs" / "1.jpg")[window]
    assert len(split_then_merge(labels)) == 8 and {0, 255} <= set(np.unique(labels).tolist())
    refined = refine_label_map(Refiner(_EchoModel()), image, labels)
    assert np.array_equal(refined, labels)
