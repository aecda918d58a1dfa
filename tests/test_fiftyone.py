"""samrefiner.integrations.fiftyone: the conversion between FiftyOne's box-cropped instance
masks and full-image masks, and (where FiftyOne is installed) the refinement of real label
objects. A FiftyOne *dataset* cannot be made here: the `fiftyone-db` wheel brings no `mongod`
for this machine and cannot download one (see the README's FiftyOne section)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA
from test_supervision import BoxesRefiner

from samrefiner.integrations.fiftyone import cropped_mask, full_mask
from samrefiner.io.images import read_image
from samrefiner.io.labelmaps import read_label_map

STUFF = DATA / "coco_stuff"


def class_masks() -> list[np.ndarray]:
    label_map, _ = read_label_map(STUFF / "pngs" / "0.png")
    return [label_map == c for c in np.unique(label_map) if c != 255]


def test_box_cropped_masks_round_trip_through_full_image_masks():
    for mask in class_masks():
        height, width = mask.shape
        box, crop = cropped_mask(mask)
        rows, cols = np.nonzero(mask)
        assert box == pytest.approx([cols.min() / width, rows.min() / height, (cols.max() - cols.min() + 1) / width, (rows.max() - rows.min() + 1) / height])
        assert crop.shape == (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        np.testing.assert_array_equal(full_mask(box, crop, height, width), mask)
    assert cropped_mask(np.zeros((4, 5), bool)) is None


def test_boxes_without_masks_resized_crops_and_boxes_over_the_edge():
    filled = full_mask([0.1, 0.2, 0.5, 0.25], None, 40, 100)
    assert filled.sum() == 50 * 10 and filled[8:18, 10:60].all()
    half = full_mask([0.0, 0.0, 0.5, 0.5], np.eye(2, dtype=bool), 40, 100)  # a 2x2 crop on a 50x20 box
    assert half[:10, :25].all() and not half[:10, 25:50].any() and half[10:20, 25:50].all()
    edge = full_mask([0.9, 0.9, 0.2, 0.2], np.ones((8, 20), bool), 40, 100)
    assert edge.sum() == 4 * 10 and edge[36:, 90:].all()


def test_real_fiftyone_labels_are_refined_into_copies():
    fo = pytest.importorskip("fiftyone")  # the label classes work without the database
    image = read_image(STUFF / "imgs" / "0.jpg")
    height, width = image.shape[:2]
    masks = class_masks()[:3]
    detections = fo.Detections(detections=[
        fo.Detection(label=f"c{index}", bounding_box=cropped_mask(mask)[0], mask=cropped_mask(mask)[1], confidence=0.5 + index / 10, occluded=bool(index % 2))
        for index, mask in enumerate(masks)
    ])
    from samrefiner.integrations.fiftyone import refine_label

    refined, kept = refine_label(BoxesRefiner(), image, detections, "sample")
    assert kept == 0 and len(refined.detections) == len(masks)
    for before, after, mask in zip(detections.detections, refined.detections, masks):
        assert (after.label, after.confidence, after["occluded"]) == (before.label, before.confidence, before["occluded"])
        assert after.id != before.id or after is not before
        rows, cols = np.nonzero(mask)
        box = np.zeros(mask.shape, bool)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        np.testing.assert_array_equal(full_mask(after.bounding_box, after.mask, height, width), box)
    assert detections.detections[0].mask.shape != refined.detections[0].mask.shape or not detections.detections[0].mask.all()


class MapRefiner:
    """Moves every class of a label map one pixel right (an output that differs from the input)."""

    def refine_label_map(self, image: np.ndarray, label_map: np.ndarray) -> np.ndarray:
        assert image.shape[:2] == label_map.shape
        return np.roll(label_map, 1, axis=1)


def test_real_fiftyone_segmentations_from_mask_or_file():
    fo = pytest.importorskip("fiftyone")
    from samrefiner.errors import InputError
    from samrefiner.integrations.fiftyone import refine_label

    image = read_image(STUFF / "imgs" / "0.jpg")
    label_map, _ = read_label_map(STUFF / "pngs" / "0.png")
    for label in (fo.Segmentation(mask=label_map), fo.Segmentation(mask_path=str(STUFF / "pngs" / "0.png"))):
        refined, kept = refine_label(MapRefiner(), image, label, "sample")
        assert kept == 0 and refined.mask_path is None
        np.testing.assert_array_equal(refined.mask, np.roll(label_map, 1, axis=1))
    with pytest.raises(InputError, match="sample: a Classification label; only Detections with masks and Segmentation"):
        refine_label(MapRefiner(), image, fo.Classification(label="x"), "sample")
