"""COCO instance JSON: polygons and RLE in, compressed RLE out, everything else kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import DATA
from io_fakes import BoxRefiner, IdentityRefiner, box_mask, tree_digest
from samrefiner.errors import InputError
from samrefiner.io.coco import CocoDataset, decode_segmentation
from samrefiner.io.labelmaps import read_label_map
from samrefiner.io.rle import encode_mask
from samrefiner.run.runner import run

STUFF = DATA / "coco_stuff"
# pycocotools 2.0 decoding under numpy 2 warns on every call; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def polygons(mask: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1).astype(float).tolist() for contour in contours if len(contour) >= 3]


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def build_coco(root: Path, stems: tuple[str, ...] = ("0", "1")) -> tuple[Path, Path, dict]:
    """Images copied from coco_stuff and a ground-truth JSON made from their label maps: per
    class, the first annotation of an image as polygons, then uncompressed RLE, then compressed
    RLE (cycling); one crowd annotation; extra fields on images, annotations and the file."""
    images = root / "images"
    images.mkdir(parents=True)
    data = {"info": {"description": "test"}, "images": [], "annotations": [], "categories": []}
    encoders = [polygons, uncompressed_rle, lambda mask: encode_mask(mask)]
    classes: set[int] = set()
    for image_id, stem in enumerate(stems, start=10):
        shutil.copy(STUFF / "imgs" / f"{stem}.jpg", images / f"{stem}.jpg")
        label_map, _ = read_label_map(STUFF / "pngs" / f"{stem}.png")
        height, width = label_map.shape
        data["images"].append(
            {"id": image_id, "file_name": f"{stem}.jpg", "height": height, "width": width, "license": 3}
        )
        for number, class_id in enumerate(c for c in np.unique(label_map) if c not in (0, 255)):
            mask = label_map == class_id
            if number % 3 == 0 and not polygons(mask):
                continue
            classes.add(int(class_id))
            data["annotations"].append(
                {
                    "id": 1000 * image_id + number,
                    "image_id": image_id,
                    "category_id": int(class_id),
                    "segmentation": encoders[number % 3](mask),
                    "iscrowd": 0,
                    "bbox": [0, 0, 1, 1],
                    "area": 1,
                    "attributes": {"occluded": number % 2 == 0},
                }
            )
    crowd = dict(data["annotations"][1], id=1, iscrowd=1)
    data["annotations"].append(crowd)
    data["categories"] = [{"id": class_id, "name": f"class {class_id}"} for class_id in sorted(classes)]
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return images, path, data


def decoded(annotation: dict, height: int, width: int) -> np.ndarray:
    return decode_segmentation(annotation["segmentation"], height, width)


def test_polygons_and_rle_in_compressed_rle_out_with_every_other_field_kept(tmp_path):
    images, path, data = build_coco(tmp_path)
    before = tree_digest(images, path)
    out = tmp_path / "out" / "refined.json"

    summary = run(CocoDataset(images, path, out), IdentityRefiner(), progress=False)

    assert (summary.images, summary.failures) == (2, 0)
    refined = COCO(str(out))  # pycocotools loads it
    assert sorted(refined.getAnnIds()) == sorted(a["id"] for a in data["annotations"])
    assert refined.dataset["categories"] == data["categories"]
    assert refined.dataset["images"] == data["images"]
    assert refined.dataset["info"] == data["info"]
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    for original in data["annotations"]:
        output = refined.anns[original["id"]]
        if original["iscrowd"]:
            assert output == original
            continue
        assert {k: v for k, v in output.items() if k not in ("segmentation", "bbox", "area")} == {
            k: v for k, v in original.items() if k not in ("segmentation", "bbox", "area")
        }
        assert isinstance(output["segmentation"]["counts"], str)
        np.testing.assert_array_equal(refined.annToMask(output) > 0, decoded(original, *sizes[original["image_id"]]))
        rle = refined.annToRLE(output)
        assert output["area"] == int(mask_utils.area(rle))
        assert output["bbox"] == mask_utils.toBbox(rle).tolist()
    assert tree_digest(images, path) == before


def test_bbox_and_area_follow_the_refined_mask(tmp_path):
    images, path, data = build_coco(tmp_path, stems=("0",))
    out = tmp_path / "refined.json"
    run(CocoDataset(images, path, out), BoxRefiner(), progress=False)
    output = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    height, width = data["images"][0]["height"], data["images"][0]["width"]
    for original in data["annotations"]:
        if original["iscrowd"]:
            continue
        box = box_mask(decoded(original, height, width))
        rows, cols = np.nonzero(box)
        got = output[original["id"]]
        assert got["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert got["area"] == box.sum()


def test_a_results_list_comes_back_as_a_results_list_in_the_same_order(tmp_path):
    images, path, data = build_coco(tmp_path)
    (images / "1.jpg").rename(images / "000000000001.jpg")  # zero-padded COCO names are found too
    results = [
        {
            "image_id": int(a["image_id"]) - 10,
            "category_id": a["category_id"],
            "score": 0.9 - 0.01 * i,
            "segmentation": a["segmentation"],
        }
        for i, a in enumerate(data["annotations"])
        if not a["iscrowd"]
    ]
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(results))
    out = tmp_path / "refined_results.json"

    summary = run(CocoDataset(images, results_path, out), IdentityRefiner(), progress=False)

    assert (summary.images, summary.failures) == (2, 0)
    output = json.loads(out.read_text())
    assert isinstance(output, list) and len(output) == len(results)
    for original, refined in zip(results, output):
        assert (refined["image_id"], refined["category_id"], refined["score"]) == (
            original["image_id"],
            original["category_id"],
            original["score"],
        )
        assert isinstance(refined["segmentation"]["counts"], str)
    scores = [json.loads(line) for line in (tmp_path / "refined_results.scores.jsonl").read_text().splitlines()]
    assert [line["file"] for line in scores] == ["0.jpg", "000000000001.jpg"]
    assert [obj["id"] for line in scores for obj in line["objects"]] == list(range(len(results)))


def test_a_bad_polygon_fails_its_image_only_and_its_annotations_stay_as_they_were(tmp_path):
    images, path, data = build_coco(tmp_path)
    broken = next(a for a in data["annotations"] if a["image_id"] == 11)
    broken["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0]]  # odd length: malformed (short parts are dropped, not errors)
    path.write_text(json.dumps(data))
    out = tmp_path / "refined.json"
    errors = tmp_path / "errors.txt"

    summary = run(CocoDataset(images, path, out), IdentityRefiner(), errors_path=errors, progress=False)

    assert (summary.images, summary.failures) == (1, 1)
    lines = errors.read_text().splitlines()
    assert lines == [
        f"{path}: annotation id {broken['id']}: bad polygon: each must be a flat list of (x, y) pairs of numbers"
    ]
    output = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    for original in data["annotations"]:
        refined = isinstance(output[original["id"]]["segmentation"], dict) and isinstance(
            output[original["id"]]["segmentation"].get("counts"), str
        )
        if original["image_id"] == 11:
            assert output[original["id"]] == original
        elif not original["iscrowd"]:
            assert refined


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"images": [], "annotations": [', r"bad\.json: not valid JSON \(Expecting value at line 1 column 32\)"),
        ('{"images": []}', r"bad\.json: a COCO file needs 'images' and 'annotations' lists"),
        ('[{"image_id": 1}]', r"bad\.json: annotation #0 has no 'segmentation'"),
        ('"hello"', r"bad\.json: not a COCO annotation file or results list"),
    ],
)
def test_an_unusable_json_file_is_one_input_error_naming_it(tmp_path, text, message):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(InputError, match=message):
        CocoDataset(tmp_path, tmp_path / "bad.json", tmp_path / "out.json")


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ({"size": [4, 5], "counts": [3, 2]}, "add up to 5, not 4x5"),
        ({"size": [4, 5], "counts": "1"}, "add up to"),
        ({"size": [4, 5], "counts": "0000000000000000000000001"}, "add up to 1, not 4x5"),
        ({"size": [4, 5], "counts": "0Q1"}, "run length beyond the image's 20 pixels"),  # 33 pixels
        ({"size": [4, 5], "counts": "0" + "9" * 6}, "run length beyond the image's 20 pixels"),  # 0 9 9 18 18 27
        ({"size": [4, 5], "counts": "0oooooooooooo0"}, "too long for any image"),
        ({"size": [4, 5], "counts": "0o"}, "ends in the middle of a run length"),
        ({"size": [4, 5], "counts": "0 4"}, "character out of range: ' '"),
        ({"size": [4, 6], "counts": [24]}, r"RLE size \[4, 6\]"),
        ([[0, 0, 3, "a", 3, 3]], "bad polygon"),
        ([], "bad polygon"),
        ({"counts": [20]}, "neither a polygon list nor an RLE"),
    ],
)
def test_malformed_segmentations_are_input_errors(segmentation, message):
    with pytest.raises(InputError, match=message):
        decode_segmentation(segmentation, 4, 5)


def test_compressed_rle_strings_are_read_run_by_run():
    """Run lengths read from pycocotools' strings equal the runs of the mask in column-major order
    (counted here from the mask itself), for masks with long runs, short ones and negative deltas."""
    from samrefiner.io.coco import _compressed_counts

    rng = np.random.default_rng(5)
    for index in range(300):
        height, width = rng.integers(1, 90, 2)
        mask = rng.random((height, width)) < rng.uniform(0.0, 1.0)
        if index % 2:
            mask = np.kron(rng.random((height // 9 + 1, width // 9 + 1)) < 0.5, np.ones((9, 9), bool))
            mask = mask[:height, :width]
        column_major = np.concatenate([[False], mask.T.reshape(-1), [not mask.T.reshape(-1)[-1]]])
        changes = np.flatnonzero(column_major[1:] != column_major[:-1])
        runs = np.diff(np.concatenate([[0], changes]))  # starting with background (0 if it starts with the mask)
        got = _compressed_counts(encode_mask(mask)["counts"].encode("ascii"), int(height * width))
        assert got.tolist() == runs.tolist()


def test_compressed_and_uncompressed_rle_decode_to_the_same_mask():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 1:8] = True
    mask[0, 0] = True
    np.testing.assert_array_equal(decode_segmentation(encode_mask(mask), 7, 9), mask)
    np.testing.assert_array_equal(decode_segmentation(uncompressed_rle(mask), 7, 9), mask)
