"""Reading COCO inputs: COCO-2014 file names in results lists, degenerate polygon parts."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from io_fakes import IdentityRefiner
from samrefiner.errors import InputWarning
from samrefiner.io.coco import CocoDataset, decode_segmentation
from samrefiner.io.rle import encode_mask
from samrefiner.run.runner import run

# pycocotools 2.0 decoding under numpy 2 warns on every call; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SQUARE = [2.0, 2.0, 20.0, 2.0, 20.0, 15.0, 2.0, 15.0]  # x, y pairs: columns 2-20, rows 2-15


def square_mask(height: int = 20, width: int = 30) -> np.ndarray:
    return decode_segmentation([SQUARE], height, width)


def test_a_results_list_finds_coco_2014_file_names(tmp_path):
    (tmp_path / "images").mkdir()
    for name, shade in (("COCO_val2014_000000000042.jpg", 40), ("COCO_val2014_000000000007.jpg", 200)):
        Image.new("RGB", (30, 20), (shade, shade, shade)).save(tmp_path / "images" / name)
    results = [
        {"image_id": 42, "category_id": 1, "segmentation": encode_mask(square_mask()), "score": 0.9},
        {"image_id": 7, "category_id": 1, "segmentation": encode_mask(square_mask()), "score": 0.8},
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    dataset = CocoDataset(tmp_path / "images", tmp_path / "results.json", tmp_path / "out.json")

    found = {ref.key: dataset.load(ref) for ref in dataset.refs()}

    assert found["42"].image_path.name == "COCO_val2014_000000000042.jpg" and found["42"].image[0, 0, 0] == 40
    assert found["7"].image_path.name == "COCO_val2014_000000000007.jpg" and found["7"].image[0, 0, 0] == 200


@pytest.mark.filterwarnings("ignore::samrefiner.errors.InputWarning")  # recorded below, then seen again
@pytest.mark.parametrize(
    "part, reason",
    [([5.0, 5.0, 9.0, 9.0], "fewer than 3 points"), ([3.0, 3.0, 6.0, 6.0, 9.0, 9.0], "zero area")],
)
def test_a_degenerate_polygon_part_is_dropped_with_a_recorded_warning(tmp_path, part, reason):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "images" / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [part, SQUARE]},  # degenerate part first
            {"id": 6, "image_id": 1, "category_id": 1, "segmentation": [SQUARE]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(data))
    dataset = CocoDataset(tmp_path / "images", tmp_path / "gt.json", tmp_path / "out.json")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run(dataset, IdentityRefiner(), progress=False)

    assert (summary.images, summary.failures) == (1, 0)
    expected = np.zeros((20, 30), bool)
    expected[2:15, 2:20] = True  # the square polygon, as pycocotools rasterises it (half-open)
    np.testing.assert_array_equal(dataset.load(dataset.refs()[0]).masks, [expected, expected])
    note = f"dropped polygon part 1 of 2 ({reason})"
    assert [str(w.message) for w in caught if w.category is InputWarning] == [
        f"{tmp_path / 'gt.json'}: annotation id 5: {note}"
    ]
    record = json.loads((tmp_path / "out.scores.jsonl").read_text())
    assert [(obj["id"], obj.get("warning")) for obj in record["objects"]] == [(5, note), (6, None)]
    output = {a["id"]: a for a in json.loads((tmp_path / "out.json").read_text())["annotations"]}
    for annotation_id in (5, 6):
        np.testing.assert_array_equal(decode_segmentation(output[annotation_id]["segmentation"], 20, 30), square_mask())


def test_an_object_made_only_of_degenerate_parts_is_an_empty_coarse_mask():
    notes: list[str] = []
    mask = decode_segmentation([[1.0, 1.0, 4.0, 4.0]], 20, 30, notes)
    assert not mask.any() and mask.shape == (20, 30)
    assert notes == ["dropped polygon part 1 of 1 (fewer than 3 points)"]
