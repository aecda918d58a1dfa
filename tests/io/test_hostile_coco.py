"""Hostile COCO values: each is read correctly or refused as one `file: what is wrong` line.

First one test per defect found by hand (each failed before this change: a segfault, a raw
exception type in the errors file, or a crash of the whole run), then property-based tests
(Hypothesis) that generate polygons, RLEs, ids, sizes and file names the way a fuzzer would:
at the reader layer (`decode_segmentation`) and on small datasets run with a stand-in refiner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from io_fakes import IdentityRefiner, tree_digest
from samrefiner.errors import InputError
from samrefiner.io.coco import CocoDataset, decode_segmentation
from samrefiner.io.rle import encode_mask
from samrefiner.review.datasets import class_names
from samrefiner.run.runner import run

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore::samrefiner.errors.InputWarning"
)
HEIGHT, WIDTH = 12, 16
SQUARE = [2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]
RAW_TYPES = (
    "TypeError",
    "ValueError",
    "KeyError",
    "AttributeError",
    "UnicodeEncodeError",
    "OverflowError",
    "Traceback",
)


def dataset_files(
    root: Path, bad_annotation: dict | None = None, bad_image: dict | None = None, categories: object = None
) -> Path:
    """Images a.png (good) and b.png, each with one square annotation; `bad_annotation` and
    `bad_image` are merged into b's annotation and image entry; `categories` replaces the list."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, shade in (("a.png", 60), ("b.png", 160)):
        Image.new("RGB", (WIDTH, HEIGHT), (shade, shade, shade)).save(root / "images" / name)
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH},
            {"id": 2, "file_name": "b.png", "height": HEIGHT, "width": WIDTH, **(bad_image or {})},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [SQUARE]},
            {"id": 20, "image_id": 2, "category_id": 1, "segmentation": [SQUARE], **(bad_annotation or {})},
        ],
        "categories": [{"id": 1, "name": "thing"}] if categories is None else categories,
    }
    path = root / "gt.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def square() -> np.ndarray:
    expected = np.zeros((HEIGHT, WIDTH), bool)
    expected[2:10, 2:12] = True  # SQUARE as pycocotools rasterises it
    return expected


def refined_by_id(out: Path) -> dict:
    return {annotation["id"]: annotation for annotation in json.loads(out.read_text())["annotations"]}


def assert_one_line_per_failure(errors: Path, failures: int, starts: tuple[str, ...]) -> list[str]:
    lines = errors.read_text(encoding="utf-8").splitlines() if failures else []
    assert len(lines) == failures
    for line in lines:
        assert line.startswith(starts), line
        assert not any(name in line for name in RAW_TYPES), line
    return lines


@pytest.mark.parametrize(
    "bad_annotation, bad_image, message",
    [
        (
            {"segmentation": {"size": 398, "counts": "PP"}},
            None,
            "annotation id 20: RLE size 398 is not [height, width]",
        ),
        (
            {"segmentation": {"size": [HEIGHT, WIDTH], "counts": "é0"}},
            None,
            "RLE counts string holds characters outside ASCII",
        ),
        ({"image_id": 2.0}, None, "annotation #1: image_id 2.0 is not an integer (nor a string)"),
        ({"id": 20.5}, None, "annotation #1: id 20.5 is not an integer (nor a string)"),
        (None, {"file_name": 123}, "image #1: file_name 123 is not a file name"),
        ({"segmentation": [[2, 2, 1e4, 2, 12, 10]]}, None, "bad polygon: part 1 has the point (10000, 2), outside"),
        ({"segmentation": [[2, 2, True, 2, 12, 10]]}, None, "bad polygon: each must be a flat list"),
    ],
)
def test_a_malformed_value_fails_its_image_with_one_line(tmp_path, bad_annotation, bad_image, message):
    """Before: raw TypeError/AttributeError/UnicodeEncodeError lines, a crash of the whole run
    (`file_name` 123), or a segfault of pycocotools (1e12)."""
    path = dataset_files(tmp_path, bad_annotation, bad_image)
    before = tree_digest(tmp_path)
    dataset = CocoDataset(tmp_path / "images", path, tmp_path / "out.json")

    summary = run(dataset, IdentityRefiner(), progress=False)

    assert (summary.images, summary.failures) == (1, 1)
    (line,) = assert_one_line_per_failure(summary.errors_path, 1, (f"{path}: ",))
    assert message in line
    output = json.loads((tmp_path / "out.json").read_text())["annotations"]
    np.testing.assert_array_equal(decode_segmentation(output[0]["segmentation"], HEIGHT, WIDTH), square())
    assert output[1] == json.loads(path.read_text())["annotations"][1]  # the failed image's, kept as it came
    assert tree_digest(tmp_path / "images", path) == {
        key: before[key] for key in tree_digest(tmp_path / "images", path)
    }


def test_a_huge_polygon_coordinate_is_an_input_error_not_a_segfault(tmp_path):
    """Before: pycocotools segfaulted (refine exited 139; --resume crashed the same way). The
    reader runs in a subprocess, so that the old code's crash fails only this test."""
    path = dataset_files(tmp_path, {"segmentation": [[2, 2, 1e12, 2, 12, 1e12]]})
    script = (
        "import sys; from pathlib import Path; from samrefiner.errors import InputError; "
        "from samrefiner.io.coco import CocoDataset\n"
        "dataset = CocoDataset(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))\n"
        "for ref in dataset.refs():\n"
        "    try:\n        dataset.load(ref)\n    except InputError as error:\n        print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "images", path, tmp_path / "out.json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.splitlines() == [
        (
            f"{path}: annotation id 20: bad polygon: part 1 has the point (1e+12, 2), outside [-16, 32] x [-12, 24] "
            "for a 16x12 image"
        )
    ]


def test_a_results_list_keeps_exactly_its_keys(tmp_path):
    """Before: a `bbox` was added to every result, so COCO.loadRes gave each the box's area."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "images" / "000000000042.png")
    triangle = decode_segmentation([[0, 0, 16, 0, 0, 12]], HEIGHT, WIDTH)
    results = [
        {"image_id": 42, "category_id": 1, "segmentation": encode_mask(triangle), "score": 0.9},
        {"image_id": 42, "category_id": 1, "segmentation": encode_mask(triangle), "score": 0.8, "bbox": [0, 0, 1, 1]},
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    dataset = CocoDataset(tmp_path / "images", tmp_path / "results.json", tmp_path / "out.json")
    run(dataset, IdentityRefiner(), progress=False)
    written = json.loads((tmp_path / "out.json").read_text())
    assert [sorted(entry) for entry in written] == [sorted(entry) for entry in results]
    rle = {"size": [HEIGHT, WIDTH], "counts": written[1]["segmentation"]["counts"].encode()}
    assert written[1]["bbox"] == mask_utils.toBbox(rle).tolist() != [0, 0, 1, 1]  # recomputed
    assert mask_utils.area(rle) == triangle.sum() < 16 * 12


# --- property-based: the reader layer -------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(min_value=-2 * WIDTH, max_value=3 * WIDTH),
    st.booleans(),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)
polygons = st.lists(st.lists(numbers, min_size=0, max_size=14), min_size=0, max_size=3)
rles = st.fixed_dictionaries(
    {
        "size": st.one_of(st.just([HEIGHT, WIDTH]), json_values, st.lists(st.integers(-3, 40), max_size=3)),
        "counts": st.one_of(
            st.text(max_size=12),
            st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), max_size=12),
            st.lists(st.integers(-5, HEIGHT * WIDTH + 5) | st.booleans(), max_size=6),
            json_values,
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(segmentation=st.one_of(polygons, rles, json_values))
def test_any_segmentation_is_a_mask_or_one_input_error(segmentation):
    try:
        mask = decode_segmentation(segmentation, HEIGHT, WIDTH)
    except InputError as error:
        assert "\n" not in str(error)
        return
    assert mask.dtype == bool and mask.shape == (HEIGHT, WIDTH)


@settings(max_examples=100, deadline=None)
@given(
    points=st.lists(st.tuples(st.floats(-WIDTH, 2 * WIDTH), st.floats(-HEIGHT, 2 * HEIGHT)), min_size=3, max_size=12)
)
def test_a_polygon_within_reach_is_what_pycocotools_draws(points):
    flat = [value for point in points for value in point]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], HEIGHT, WIDTH))) > 0
    notes: list[str] = []
    mask = decode_segmentation([flat], HEIGHT, WIDTH, notes)
    if notes:  # a zero-area part is dropped with a note; pycocotools draws nothing or a sliver of it
        assert not mask.any()
    else:
        np.testing.assert_array_equal(mask, expected)


@settings(max_examples=100, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=HEIGHT * WIDTH, max_size=HEIGHT * WIDTH), compressed=st.booleans())
def test_a_well_formed_rle_gives_back_its_mask(bits, compressed):
    mask = np.array(bits, bool).reshape(HEIGHT, WIDTH)
    if compressed:
        rle = encode_mask(mask)
    else:
        flat = mask.flatten(order="F").astype(np.int8)
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        rle = {"size": [HEIGHT, WIDTH], "counts": ([0] if flat[0] else []) + np.diff(bounds).tolist()}
    np.testing.assert_array_equal(decode_segmentation(rle, HEIGHT, WIDTH), mask)


# --- property-based: whole datasets with a stand-in refiner ---------------------------------

annotation_changes = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "image_id": st.one_of(st.just(2), st.just(2.0), st.just("2"), json_values),
        "segmentation": st.one_of(polygons, rles, json_values),
    },
)
image_changes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.just(2), st.just(1), st.just(2.0), st.text(max_size=3), st.integers()),
        "file_name": st.one_of(st.just("a.png"), st.just("b.png"), json_values, st.text(max_size=10)),
        "height": st.one_of(st.just(HEIGHT), json_values),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bad_annotation=annotation_changes,
    bad_image=image_changes,
    categories=st.one_of(
        st.none(), json_values, st.lists(st.fixed_dictionaries({"id": json_values, "name": json_values}))
    ),
)
def test_a_dataset_with_hostile_values_refines_the_rest(tmp_path_factory, bad_annotation, bad_image, categories):
    root = tmp_path_factory.mktemp("coco")
    path = dataset_files(root, bad_annotation, bad_image, categories)
    before = tree_digest(root)
    try:
        dataset = CocoDataset(root / "images", path, root / "out.json")
    except InputError as error:  # identity (two images of one id or file name): the whole file
        assert "\n" not in str(error) and str(error).startswith(f"{path}: ")
        assert tree_digest(root) == before
        return
    names = class_names(dataset)  # what review shows: names of the usable categories
    assert all(isinstance(name, str) for name in names.values())
    summary = run(dataset, IdentityRefiner(), progress=False)
    assert_one_line_per_failure(summary.errors_path, summary.failures, (f"{path}: ", f"{root / 'images'}"))
    assert summary.images >= 1  # image a is always refined, and refined as it came (identity refiner)
    first = json.loads((root / "out.json").read_text())["annotations"][0]
    np.testing.assert_array_equal(decode_segmentation(first["segmentation"], HEIGHT, WIDTH), square())
    after = tree_digest(root)
    assert {key: after[key] for key in before} == before


def test_the_cli_lists_five_malformed_images_in_a_row_and_refines_the_rest(tmp_path, capsys, monkeypatch):
    """Before: five raw exceptions in a row stopped the run as "systemic" (exit 3)."""
    from test_refine_cli import FAST, run_cli

    bad = [
        {"segmentation": {"size": 398, "counts": "PP"}},
        {"segmentation": {"size": [HEIGHT, WIDTH], "counts": "é0"}},
        {"image_id": 3.0},  # equals 3: the annotation stays with image 3, which fails
        {"segmentation": [[2, 2, 1e4, 2, 12, 10]]},
        {"segmentation": {"size": [HEIGHT, WIDTH], "counts": [True, 5]}},
    ]
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for number in range(1, 7):  # images 1-5 bad, image 6 good
        Image.new("RGB", (WIDTH, HEIGHT), (40 * number,) * 3).save(tmp_path / "images" / f"{number}.png")
        images.append({"id": number, "file_name": f"{number}.png", "height": HEIGHT, "width": WIDTH})
        change = bad[number - 1] if number <= len(bad) else {}
        annotations.append(
            {"id": 10 * number, "image_id": number, "category_id": 1, "segmentation": [SQUARE], **change}
        )
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}, ensure_ascii=False))
    before = tree_digest(tmp_path)

    code, stdout, stderr = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        tmp_path / "images",
        "--coco",
        path,
        "--out",
        tmp_path / "out.json",
    )

    assert code == 1, (stdout, stderr)
    assert all(line.startswith("samrefiner: ") for line in stderr.splitlines()), stderr
    lines = assert_one_line_per_failure(tmp_path / "out.errors.txt", 5, (f"{path}: ",))
    assert len(lines) == 5
    assert list(refined_by_id(tmp_path / "out.json")) == [10, 20, 30, 40, 50, 60]
    after = tree_digest(tmp_path)
    assert {key: after[key] for key in before} == before
