"""samrefiner.integrations.fiftyone: the conversion between FiftyOne's box-cropped instance masks
and full-image masks, the refinement of real label objects, and `refine_field` on datasets
stored in a real database (masks, label maps, resume, skip, overwrite).

FiftyOne's pins clash with ours, so `.ci/run` runs this file in its own venv (.venv-fiftyone)
against a mongod it starts (FIFTYONE_DATABASE_URI); there SAMREFINER_FIFTYONE_REQUIRED=1 turns
the skips for a missing FiftyOne or database into failures. Expected masks come from
`Refiner.refine` / `refine_label_map` on the same coarse masks; FiftyOne's fields are read back
from the database with `values()`."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

import numpy as np
import pytest

from conftest import DATA, SHARED
from docs_examples import examples, given_names, run_example
from samrefiner import Refiner, RefinerConfig
from samrefiner.errors import InputError
from samrefiner.integrations.fiftyone import cropped_mask, full_mask, refine_field, refine_label
from samrefiner.io.images import read_image
from samrefiner.io.labelmaps import read_label_map

STUFF = DATA / "coco_stuff"
REQUIRED = os.environ.get("SAMREFINER_FIFTYONE_REQUIRED") == "1"
FIFTYONE_EXAMPLES = [example for example in examples() if "fiftyone" in example.needs]


def class_masks(index: int = 0) -> list[np.ndarray]:
    label_map, _ = read_label_map(STUFF / "pngs" / f"{index}.png")
    return [label_map == c for c in np.unique(label_map) if c != 255]


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 of a mask's pixels (inclusive)."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def relative_box(mask: np.ndarray) -> list[float]:
    """FiftyOne's bounding_box of a mask's tight box: [x, y, w, h] relative to the image."""
    height, width = mask.shape
    x1, y1, x2, y2 = tight_box(mask)
    return [x1 / width, y1 / height, (x2 - x1 + 1) / width, (y2 - y1 + 1) / height]


def crop(mask: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = tight_box(mask)
    return mask[y1 : y2 + 1, x1 : x2 + 1]


def skip_or_fail(reason: str) -> None:
    (pytest.fail if REQUIRED else pytest.skip)(reason)


def test_box_cropped_masks_round_trip_through_full_image_masks():
    for mask in class_masks():
        height, width = mask.shape
        box, cropped = cropped_mask(mask)
        assert box == pytest.approx(relative_box(mask))
        np.testing.assert_array_equal(cropped, crop(mask))
        np.testing.assert_array_equal(full_mask(box, cropped, height, width), mask)
    assert cropped_mask(np.zeros((4, 5), bool)) is None


def test_boxes_without_masks_resized_crops_and_boxes_over_the_edge():
    filled = full_mask([0.1, 0.2, 0.5, 0.25], None, 40, 100)
    assert filled.sum() == 50 * 10 and filled[8:18, 10:60].all()
    half = full_mask([0.0, 0.0, 0.5, 0.5], np.eye(2, dtype=bool), 40, 100)  # a 2x2 crop on a 50x20 box
    assert half[:10, :25].all() and not half[:10, 25:50].any() and half[10:20, 25:50].all()
    edge = full_mask([0.9, 0.9, 0.2, 0.2], np.ones((8, 20), bool), 40, 100)
    assert edge.sum() == 4 * 10 and edge[36:, 90:].all()


@pytest.fixture(scope="module")
def fo() -> Any:
    if importlib.util.find_spec("fiftyone") is None:
        skip_or_fail("FiftyOne is not installed (.ci/run tests it in .venv-fiftyone)")
    import fiftyone

    return fiftyone


@pytest.fixture(scope="module")
def database(fo: Any) -> Any:
    """FiftyOne on the mongod that FIFTYONE_DATABASE_URI names."""
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        skip_or_fail("FIFTYONE_DATABASE_URI is not set (.ci/run starts a mongod and sets it)")
    return fo


@pytest.fixture(scope="module")
def refiner(reduced_model) -> Refiner:
    return Refiner(reduced_model, RefinerConfig(iterations=1))


# Detections: image 0 with one detection per class and a box-only one, an image without a label,
# image 5 with one detection per class. The box-only detection covers these pixels:
BOX_ONLY = (slice(30, 110), slice(40, 140))


def coarse_masks(index: int) -> list[np.ndarray]:
    masks = class_masks(index)
    if index == 0:
        box = np.zeros_like(masks[0])
        box[BOX_ONLY] = True
        masks.append(box)
    return masks


def detections(fo: Any, index: int) -> Any:
    masks = coarse_masks(index)
    items = [
        fo.Detection(
            label=f"class {n}",
            bounding_box=relative_box(mask),
            mask=crop(mask),
            confidence=0.5 + n / 20,
            occluded=n % 2 == 1,
        )
        for n, mask in enumerate(masks[:-1] if index == 0 else masks)
    ]
    if index == 0:
        items.append(fo.Detection(label="box", bounding_box=relative_box(masks[-1])))
    return fo.Detections(detections=items)


@pytest.fixture()
def detection_dataset(database: Any) -> Any:
    fo = database
    dataset = fo.Dataset()
    dataset.add_samples(
        [
            fo.Sample(filepath=str(STUFF / "imgs" / "0.jpg"), ground_truth=detections(fo, 0)),
            fo.Sample(filepath=str(STUFF / "imgs" / "1.jpg")),
            fo.Sample(filepath=str(STUFF / "imgs" / "5.jpg"), ground_truth=detections(fo, 5)),
        ]
    )
    yield dataset
    dataset.delete()


class Counting:
    """The refiner, counting its `refine` calls; with `stop_after`, a KeyboardInterrupt on the call
    after that many (an interrupted run)."""

    def __init__(self, refiner: Refiner, stop_after: int | None = None) -> None:
        self.refiner, self.stop_after, self.calls = refiner, stop_after, 0

    def refine(self, image: Any, masks: Any) -> Any:
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.refiner.refine(image, masks)


def kept_fields(detection: Any) -> dict[str, Any]:
    """A detection's fields but its id and geometry (label, confidence, attributes, ...)."""
    return {key: value for key, value in detection.to_dict().items() if key not in ("_id", "bounding_box", "mask")}


@pytest.fixture(scope="module")
def api_masks(refiner: Refiner) -> dict[int, np.ndarray]:
    """`Refiner.refine` of each detection image's coarse masks, by coco_stuff image number."""
    images = {index: read_image(STUFF / "imgs" / f"{index}.jpg") for index in (0, 5)}
    masks = {index: refiner.refine(image, np.stack(coarse_masks(index))).masks for index, image in images.items()}
    for refined in masks.values():  # distinct objects, so that a mix-up of objects shows
        assert len(np.unique(refined.reshape(len(refined), -1), axis=0)) == len(refined)
    return masks


def assert_refined_as_the_api(dataset: Any, api_masks: dict[int, np.ndarray]) -> None:
    """Each stored refined detection, per object, is `Refiner.refine` of its coarse mask (read
    from the database), keeps the fields of its source and links to it by `source_id`."""
    for path, source, refined in zip(*dataset.values(["filepath", "ground_truth", "refined"])):
        if source is None:
            assert refined is None
            continue
        index = int(os.path.basename(path).split(".")[0])
        expected = api_masks[index]
        assert len(refined.detections) == len(source.detections) == len(expected)
        for before, after, mask in zip(source.detections, refined.detections, expected):
            assert after.source_id == before.id and after.id != before.id
            assert kept_fields(after) == kept_fields(before) | {"source_id": before.id}
            assert mask.any(), "the reduced model gave an empty mask: pick other images"
            assert after.bounding_box == pytest.approx(relative_box(mask))
            np.testing.assert_array_equal(np.asarray(after.mask, bool), crop(mask))


def test_refine_field_detections_resume_skip_and_overwrite(detection_dataset, refiner, api_masks):
    with pytest.raises(KeyboardInterrupt):
        refine_field(detection_dataset, Counting(refiner, stop_after=1), "ground_truth", "refined", progress=False)
    stored = detection_dataset.values("refined")
    assert stored[0] is not None and stored[1:] == [None, None]  # the first sample was saved

    resumed = Counting(refiner)
    summary = refine_field(detection_dataset, resumed, "ground_truth", "refined", progress=False)
    assert (summary.refined, summary.skipped, summary.unlabeled, summary.kept, resumed.calls) == (1, 1, 1, 0, 1)
    assert_refined_as_the_api(detection_dataset, api_masks)
    first_ids = [d.id for d in detection_dataset.values("refined")[0].detections]

    again = Counting(refiner)
    summary = refine_field(detection_dataset, again, "ground_truth", "refined", progress=False)
    assert (summary.refined, summary.skipped, summary.unlabeled, again.calls) == (0, 2, 1, 0)

    sample = detection_dataset.first()
    sample["refined"] = detection_dataset.first()["ground_truth"]  # a stale value to overwrite
    sample.save()
    summary = refine_field(detection_dataset, refiner, "ground_truth", "refined", overwrite=True, progress=False)
    assert (summary.refined, summary.skipped, summary.unlabeled) == (2, 0, 1)
    assert_refined_as_the_api(detection_dataset, api_masks)
    assert not set(first_ids) & {d.id for d in detection_dataset.values("refined")[0].detections}


def test_refine_field_label_maps_from_mask_or_file(database, refiner):
    fo = database
    label_maps = {index: read_label_map(STUFF / "pngs" / f"{index}.png")[0] for index in (0, 5)}
    dataset = fo.Dataset()
    dataset.add_samples(
        [
            fo.Sample(filepath=str(STUFF / "imgs" / "0.jpg"), coarse=fo.Segmentation(mask=label_maps[0])),
            fo.Sample(
                filepath=str(STUFF / "imgs" / "5.jpg"), coarse=fo.Segmentation(mask_path=str(STUFF / "pngs" / "5.png"))
            ),
        ]
    )
    try:
        summary = refine_field(dataset, refiner, "coarse", "refined", progress=False)
        assert (summary.refined, summary.skipped, summary.unlabeled) == (2, 0, 0)
        for index, source, refined in zip((0, 5), *dataset.values(["coarse", "refined"])):
            expected = refiner.refine_label_map(read_image(STUFF / "imgs" / f"{index}.jpg"), label_maps[index])
            assert (expected != label_maps[index]).any()
            np.testing.assert_array_equal(refined.mask, expected)
            assert refined.mask_path is None and refined.source_id == source.id != refined.id
        assert refine_field(dataset, refiner, "coarse", "refined", progress=False).skipped == 2
    finally:
        dataset.delete()


def test_refine_field_refuses_to_write_into_its_input_field(detection_dataset, refiner):
    message = "the refined labels need a field of their own: 'ground_truth' is the input field"
    with pytest.raises(InputError, match=message):
        refine_field(detection_dataset, refiner, "ground_truth", "ground_truth", progress=False)
    assert detection_dataset.values("ground_truth")[0] is not None


def test_label_objects_are_refined_into_linked_copies(fo, refiner, api_masks):
    """Without a database: a Detections label, its fields kept, per object as `Refiner.refine`."""
    image = read_image(STUFF / "imgs" / "0.jpg")
    label = detections(fo, 0)
    refined, kept = refine_label(refiner, image, label, "sample")
    expected = api_masks[0]
    assert kept == 0 and len(refined.detections) == len(expected)
    for before, after, mask in zip(label.detections, refined.detections, expected):
        assert kept_fields(after) == kept_fields(before) | {"source_id": before.id}
        np.testing.assert_array_equal(full_mask(after.bounding_box, after.mask, *mask.shape), mask)
    with pytest.raises(InputError, match="sample: a Classification label; only Detections with masks and Segmentation"):
        refine_label(refiner, image, fo.Classification(label="x"), "sample")


class EmptyRefiner:
    """Refines every mask into nothing (what `refine_field` keeps the input for)."""

    def __init__(self, refiner: Refiner) -> None:
        self.refiner = refiner

    def refine(self, image: Any, masks: Any) -> Any:
        result = self.refiner.refine(image, masks)
        return dataclasses.replace(result, masks=np.zeros_like(result.masks))


def test_a_detection_refined_into_nothing_keeps_its_input(fo, refiner):
    label = detections(fo, 5)
    refined, kept = refine_label(EmptyRefiner(refiner), read_image(STUFF / "imgs" / "5.jpg"), label, "sample")
    assert kept == len(label.detections) == len(refined.detections)
    for before, after in zip(label.detections, refined.detections):
        assert after.bounding_box == before.bounding_box and after.source_id == before.id
        np.testing.assert_array_equal(after.mask, before.mask)


@pytest.mark.parametrize("example", FIFTYONE_EXAMPLES, ids=[example.name for example in FIFTYONE_EXAMPLES])
def test_documented_fiftyone_example_runs_as_written(example, database, reduced_model, tmp_path):
    run_example(example, given_names(reduced_model, DATA), SHARED, tmp_path / "work")
