"""The review report's pieces without a browser: crops, thumbnails, page data, decisions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samrefiner.errors import InputError
from samrefiner.review.decisions import read_decisions
from samrefiner.review.objects import ObjectSummary, ReviewImage, ReviewObject
from samrefiner.review.page import prepare_report_dir
from samrefiner.review.report import build_report
from samrefiner.review.thumbnails import COARSE_COLOUR, PANEL_GAP, PANEL_SIZE, Crop, object_crop, side_by_side


def read_manifest(report: Path) -> dict:
    text = (report / "data" / "manifest.js").read_text()
    return json.loads(re.fullmatch(r"window\.REVIEW_MANIFEST = (.*);\n", text, re.S).group(1))


def read_chunk(report: Path, view: int, page: int) -> list[dict]:
    text = (report / "data" / f"v{view}" / f"p{page}.js").read_text()
    match = re.fullmatch(rf"window\.reviewChunk\({view},{page},(.*)\);\n", text, re.S)
    return json.loads(match.group(1))


def box_mask(shape: tuple[int, int], top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def test_object_crop_holds_both_masks_with_context() -> None:
    coarse = box_mask((200, 300), 50, 70, 100, 140)  # 20 x 40
    refined = box_mask((200, 300), 60, 90, 120, 150)  # union: rows 50..89, cols 100..149
    crop = object_crop(coarse, refined)
    # union side 50, with 25 % context on each side: 75; centred on (70, 125)
    assert crop == Crop(70 - 37, 70 - 37 + 75, 125 - 37, 125 - 37 + 75)


def test_object_crop_shifts_inside_the_image_and_covers_empty_masks() -> None:
    corner = box_mask((100, 100), 0, 10, 90, 100)
    assert object_crop(corner, corner) == Crop(0, 48, 52, 100)  # minimum crop, pushed inside
    empty = np.zeros((30, 40), bool)
    assert object_crop(empty, empty) == Crop(0, 30, 0, 40)


def test_side_by_side_tints_coarse_left_and_refined_right() -> None:
    image = np.full((100, 100, 3), 100, np.uint8)
    coarse = box_mask((100, 100), 0, 50, 0, 100)  # top half
    refined = box_mask((100, 100), 50, 100, 0, 100)  # bottom half
    picture = side_by_side(image, coarse, refined, Crop(0, 100, 0, 100))
    assert picture.shape == (PANEL_SIZE, 2 * PANEL_SIZE + PANEL_GAP, 3)
    tinted = (np.array([100, 100, 100]) * 0.6 + np.array(COARSE_COLOUR) * 0.4).astype(np.uint8)
    assert (picture[PANEL_SIZE // 4, PANEL_SIZE // 2] == tinted).all()  # coarse: top half tinted
    assert (picture[3 * PANEL_SIZE // 4, PANEL_SIZE // 2] == 100).all()  # ... bottom half plain
    right = PANEL_SIZE + PANEL_GAP + PANEL_SIZE // 2
    assert (picture[PANEL_SIZE // 4, right] == 100).all()  # refined: top half plain
    assert not (picture[3 * PANEL_SIZE // 4, right] == 100).all()


def synthetic_images(tmp_path: Path) -> list[ReviewImage]:
    """Two images, five objects with hand-computed IoU(coarse, refined)."""
    path = tmp_path / "image.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(path)
    square = box_mask((60, 80), 10, 30, 10, 30)  # 400 px
    half = box_mask((60, 80), 10, 30, 10, 20)  # 200 px inside square: IoU 0.5
    quarter = box_mask((60, 80), 10, 20, 10, 20)  # 100 px: IoU 0.25
    return [
        ReviewImage(
            "a.png",
            path,
            [
                ReviewObject("0", "cat", square, square, 0.95),  # change 1.0 -> score 0.95
                ReviewObject("1", "dog", half, square, 0.9),  # change 0.5 -> 0.5
                ReviewObject("2", "cat", quarter, square, 0.1),  # change 0.25 -> 0.1
            ],
        ),
        ReviewImage(
            "b.png",
            path,
            [
                ReviewObject("0", "dog", square, half, 0.7),  # change 0.5 -> 0.5 (ties with a#1)
                ReviewObject("1", "cat", square, square, 0.8),  # change 1.0 -> 0.8
            ],
        ),
    ]


def test_build_report_scores_sorts_and_pages(tmp_path: Path) -> None:
    report = tmp_path / "report"
    summaries = build_report(synthetic_images(tmp_path), report, source="test", page_size=2)
    assert [summary.change_iou for summary in summaries] == [1.0, 0.5, 0.25, 0.5, 1.0]
    manifest = read_manifest(report)
    assert manifest["total"] == 5 and manifest["pageSize"] == 2 and manifest["hasPredicted"]
    assert [(view["name"], view["count"]) for view in manifest["views"]] == [("All classes", 5), ("cat", 3), ("dog", 2)]
    everything = [entry for page in range(3) for entry in read_chunk(report, 0, page)]
    assert [entry["id"] for entry in everything] == ["a.png#2", "a.png#1", "b.png#0", "b.png#1", "a.png#0"]
    assert [entry["score"] for entry in everything] == [0.1, 0.5, 0.5, 0.8, 0.95]
    assert manifest["views"][0]["firsts"] == [0.1, 0.5, 0.95]
    assert [entry["id"] for entry in read_chunk(report, 1, 0) + read_chunk(report, 1, 1)] == [
        "a.png#2",
        "b.png#1",
        "a.png#0",
    ]
    for entry in everything:
        assert Image.open(report / entry["thumb"]).size == (2 * PANEL_SIZE + PANEL_GAP, PANEL_SIZE)
    for name in ("index.html", "review.js", "review.css"):
        assert (report / name).is_file()


def test_attention_without_predicted_iou_is_the_change() -> None:
    summary = ObjectSummary("x.png", "3", "", None, 0.42, "thumbs/0.jpg")
    assert summary.attention == 0.42 and summary.uid == "x.png#3"


def test_mask_of_the_wrong_size_names_the_image(tmp_path: Path) -> None:
    images = synthetic_images(tmp_path)
    images[1].objects[0].refined = np.zeros((10, 10), bool)
    with pytest.raises(InputError, match=r"image\.png: refined mask of object 0 is 10x10, the image 80x60"):
        build_report(images, tmp_path / "report", source="test")


def test_report_folder_must_be_empty_or_an_earlier_report(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds no earlier review report"):
        prepare_report_dir(tmp_path)
    report = tmp_path / "report"
    build_report(synthetic_images(tmp_path), report, source="test", page_size=2)
    build_report(synthetic_images(tmp_path)[:1], report, source="test", page_size=2)  # rebuilt in place
    assert read_manifest(report)["total"] == 3
    assert not (report / "data" / "v0" / "p2.js").exists() and len(list((report / "thumbs").iterdir())) == 3


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_read_decisions_and_defaults(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "d.json",
        {
            "format": "samrefiner-review-decisions",
            "version": 1,
            "decisions": [
                {"image": "a.png", "object": "1", "decision": "reject"},
                {"image": "a.png", "object": "2", "decision": "accept"},
            ],
        },
    )
    decisions = read_decisions(path)
    assert not decisions.use_refined("a.png", "1")
    assert decisions.use_refined("a.png", "2") and decisions.use_refined("a.png", "3")
    flipped = read_decisions(path, undecided_refined=False)
    assert flipped.use_refined("a.png", "2") and not flipped.use_refined("a.png", "3")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JSON decisions file"),
        ('{"format": "other"}', "not a decisions file exported by the review page"),
        ('{"format": "samrefiner-review-decisions", "decisions": {}}', "'decisions' must be a list"),
        (
            '{"format": "samrefiner-review-decisions", "decisions": [{"image": "a", "object": 1, "decision": "x"}]}',
            "decision 0 needs",
        ),
    ],
)
def test_bad_decisions_file_is_one_line_naming_it(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as error:
        read_decisions(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
