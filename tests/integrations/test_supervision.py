"""samrefiner.integrations.supervision with the real `supervision` package."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from conftest import DATA, SAM_REF
from io_fakes import box_mask
from samrefiner import Refiner, RefinerConfig, load_model
from samrefiner.errors import InputError
from samrefiner.integrations.supervision import refine_detections
from samrefiner.io.images import read_image
from samrefiner.io.labelmaps import read_label_map
from samrefiner.prompts import Prompts
from samrefiner.refine import RefineResult

STUFF = DATA / "coco_stuff"


def detections_from_coco_stuff() -> tuple[np.ndarray, sv.Detections]:
    """coco_stuff image 0 with one detection per class: its mask, box, scores, ids and data."""
    image = read_image(STUFF / "imgs" / "0.jpg")
    label_map, _ = read_label_map(STUFF / "pngs" / "0.png")
    classes = [int(c) for c in np.unique(label_map) if c != 255][:5]
    masks = np.stack([label_map == c for c in classes])
    detections = sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=np.linspace(0.9, 0.5, len(classes), dtype=np.float32),
        class_id=np.array(classes),
        tracker_id=np.arange(100, 100 + len(classes)),
        data={"class_name": np.array([f"class {c}" for c in classes]), "source": np.arange(len(classes)) * 7},
        metadata={"video": "coco_stuff/0"},
    )
    return image, detections


class BoxesRefiner:
    """Refines every mask into its filled bounding box; remembers the image it was given."""

    def refine(self, image: np.ndarray, masks: np.ndarray) -> RefineResult:
        self.image = image
        count = len(masks)
        prompts = Prompts(
            np.zeros((count, 1, 2), np.int64),
            np.ones((count, 1), np.int64),
            np.zeros((count, 4), np.int64),
            np.zeros(count, bool),
        )
        flags = np.zeros(count, bool)
        return RefineResult(
            np.stack([box_mask(m) for m in masks]),
            np.ones(count, np.float32),
            np.ones((count, 3), np.float32),
            np.zeros(count, np.int64),
            prompts,
            flags,
            flags,
        )


def assert_fields_kept(refined: sv.Detections, original: sv.Detections) -> None:
    np.testing.assert_array_equal(refined.class_id, original.class_id)
    np.testing.assert_array_equal(refined.confidence, original.confidence)
    np.testing.assert_array_equal(refined.tracker_id, original.tracker_id)
    assert refined.data.keys() == original.data.keys()
    for key in original.data:
        np.testing.assert_array_equal(refined.data[key], original.data[key])
    assert refined.metadata == original.metadata


def independent_xyxy(masks: np.ndarray) -> np.ndarray:
    boxes = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()] if len(rows) else [0, 0, 0, 0])
    return np.array(boxes, np.float32)


def test_refined_masks_and_boxes_with_every_other_field_kept():
    image, detections = detections_from_coco_stuff()
    refined = refine_detections(BoxesRefiner(), image, detections)
    assert isinstance(refined, sv.Detections) and len(refined) == len(detections)
    assert_fields_kept(refined, detections)
    expected = np.stack([box_mask(m) for m in detections.mask])
    np.testing.assert_array_equal(refined.mask, expected)
    np.testing.assert_array_equal(refined.xyxy, independent_xyxy(expected))


def test_boxes_without_masks_are_the_coarse_masks_and_bgr_is_flipped():
    image, detections = detections_from_coco_stuff()
    boxes_only = sv.Detections(xyxy=np.array([[10.0, 20.0, 59.0, 99.0]]), class_id=np.array([3]))
    refiner = BoxesRefiner()
    refined = refine_detections(refiner, image[..., ::-1], boxes_only, bgr=True)
    np.testing.assert_array_equal(refiner.image, image)
    np.testing.assert_array_equal(refined.xyxy, [[10, 20, 59, 99]])
    assert refined.mask.sum() == 50 * 80 and refined.confidence is None and refined.tracker_id is None
    with pytest.raises(InputError, match="masks are 400x375 but the image is 500x375"):
        refine_detections(refiner, image, sv.Detections(xyxy=detections.xyxy[:1], mask=detections.mask[:1, :, :400]))


def test_with_the_reduced_model_per_object_as_the_api_from_an_array_a_bgr_array_and_a_path():
    image, detections = detections_from_coco_stuff()
    refiner = Refiner(load_model(str(SAM_REF / "reduced_sam.pth")), RefinerConfig(iterations=1))
    expected = refiner.refine(image, detections.mask[:2]).masks
    assert (expected != detections.mask[:2]).any()  # refined, not passed through
    for given, bgr in (
        (image, False),
        (np.ascontiguousarray(image[..., ::-1]), True),
        (STUFF / "imgs" / "0.jpg", False),
    ):
        refined = refine_detections(refiner, given, detections[:2], bgr=bgr)
        assert_fields_kept(refined, detections[:2])
        for got, want in zip(refined.mask, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(refined.xyxy, independent_xyxy(expected))
    refined = refine_detections(refiner, str(STUFF / "imgs" / "0.jpg"), detections[:1])
    np.testing.assert_array_equal(refined.mask[0], refiner.refine(image, detections.mask[:1]).masks[0])
    with pytest.raises(InputError, match="an image file is read as RGB"):
        refine_detections(refiner, STUFF / "imgs" / "0.jpg", detections[:1], bgr=True)
