"""The streaming COCO index: the values of json.load, the bytes of json.dumps, bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import samrefiner.io.coco_index as coco_index
from samrefiner.errors import InputError
from samrefiner.io.coco_index import CocoIndex


def _awkward_coco() -> dict:
    """Unicode in strings, floats in several spellings, nested extras, crowd annotations,
    an image id that appears only in the annotations, and an extra top-level key after them."""
    annotations = []
    for number in range(40):
        annotations.append(
            {
                "id": 1000 + number,
                "image_id": [7, "b\u00e9", 7, 3, 99][number % 5],
                "category_id": number % 3,
                "segmentation": [[0.5, 1e-7, 3.0, 4.25, 5, 6.125]] if number % 2 else {"size": [4, 5], "counts": "0d1"},
                "iscrowd": int(number % 7 == 0),
                "note": 'caf\u00e9 \u2713 "quoted" \\ back' * (number % 3),
                "extra": {"nested": [1, 2.0, None, True, {"x": -0.0}]},
            }
        )
    return {
        "info": {"description": "t\u00ebst", "version": 1.0},
        "images": [
            {"id": 3, "file_name": "3.jpg"},
            {"id": 7, "file_name": "7.jpg"},
            {"id": "b\u00e9", "file_name": "b.jpg"},
        ],
        "annotations": annotations,
        "categories": [{"id": 0, "name": "\u4e2d\u6587"}],
        "zzz": [1e300, 12345678901234567890],
    }


def _reference_by_image(annotations: list[dict]) -> dict:
    by_image: dict = defaultdict(list)
    for index, annotation in enumerate(annotations):
        if not annotation.get("iscrowd"):
            by_image[annotation["image_id"]].append(index)
    return dict(by_image)


@pytest.mark.parametrize("indent, chunk", [(None, 4 << 20), (2, 7), (None, 1)])
def test_values_and_output_bytes_equal_json_load_and_dumps(tmp_path: Path, monkeypatch, indent, chunk) -> None:
    data = _awkward_coco()
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=indent is None), encoding="utf-8")
    monkeypatch.setattr(coco_index, "CHUNK_BYTES", chunk)  # values cut at every possible place
    index = CocoIndex.build(path)
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert list(index.annotations) == loaded["annotations"]
    assert index.annotations[17] == loaded["annotations"][17]
    assert {key: index.by_image[key] for key in index.by_image} == _reference_by_image(loaded["annotations"])
    assert list(index.by_image) == list(_reference_by_image(loaded["annotations"]))
    assert index.images == loaded["images"] and index.top["categories"] == loaded["categories"]

    replaced = {5: {"id": 1005, "segmentation": {"size": [1, 1], "counts": "01"}}, 1: {"new": "\u00e9"}}
    expected = dict(loaded, annotations=[replaced.get(i, a) for i, a in enumerate(loaded["annotations"])])
    out = tmp_path / "out.json"
    with open(out, "wb") as handle:
        index.write_json(handle, iter(replaced.items()))
    assert out.read_bytes() == json.dumps(expected, separators=(",", ":")).encode("ascii")


def test_a_results_list_is_indexed_and_written_as_a_list(tmp_path: Path) -> None:
    results = [
        {"image_id": 5 - i % 3, "category_id": 1, "segmentation": [[1, 2, 3, 4, 5, 6]], "score": 0.5} for i in range(9)
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    index = CocoIndex.build(path)
    assert index.is_results and index.top is None and dict(index.by_image) == _reference_by_image(results)
    out = tmp_path / "out.json"
    with open(out, "wb") as handle:
        index.write_json(handle, [(8, {"x": 1})])
    assert json.loads(out.read_text()) == results[:8] + [{"x": 1}]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '{"images": [], "annotations": [{"image_id": 1, "segmentation": []}',
            r"not valid JSON \(Expecting ',' delimiter",
        ),
        ('{"images": [], "annotations": []} x', r"not valid JSON \(Extra data at line 1 column 35\)"),
        ('{"images": [{"id": 1}], "annotations": []}', r"every image entry needs 'id' and 'file_name'"),
        (
            '{"images": [], "annotations": [{"id": 4, "image_id": 1}]}',
            r"x\.json: annotation id 4 has no 'segmentation'",
        ),
        ('[{"image_id": [1], "segmentation": []}]', r"annotation #0: image_id must be a number or a string"),
        ('{"images": [], "annotations": [], "annotations": 3}', r"needs 'images' and 'annotations' lists"),
    ],
)
def test_unusable_files_are_one_line_naming_them(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(InputError, match=message):
        CocoIndex.build(tmp_path / "x.json")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_bytes(b'{"images": [], "annotations": [], "info": "\xff"}')
    with pytest.raises(InputError, match=r"x\.json: cannot be read as JSON"):
        CocoIndex.build(tmp_path / "x.json")


def test_the_index_holds_a_small_part_of_what_json_load_holds(tmp_path: Path, monkeypatch) -> None:
    """20K small-polygon annotations read in 64 KiB chunks: indexing allocates under a tenth of
    what parsing the file does (the index: 21 bytes per annotation, plus the images list)."""
    monkeypatch.setattr(coco_index, "CHUNK_BYTES", 64 << 10)
    rng = np.random.default_rng(0)
    path = tmp_path / "big.json"
    with open(path, "w") as handle:
        handle.write('{"images": [' + ",".join(f'{{"id": {i}, "file_name": "{i}.jpg"}}' for i in range(3000)))
        handle.write('], "annotations": [')
        handle.write(
            ",".join(
                json.dumps(
                    {
                        "id": i,
                        "image_id": i % 3000,
                        "category_id": 1,
                        "iscrowd": 0,
                        "area": 12.5,
                        "bbox": [1.0, 2.0, 3.0, 4.0],
                        "segmentation": [rng.uniform(0, 600, 12).round(2).tolist()],
                    }
                )
                for i in range(20000)
            )
        )
        handle.write("]}")
    tracemalloc.start()
    index = CocoIndex.build(path)
    indexed = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    loaded = json.loads(path.read_text())
    parsed = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(index.annotations) == len(loaded["annotations"]) == 20000
    assert indexed < parsed / 10, (indexed, parsed)
