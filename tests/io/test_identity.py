"""Ambiguous identity is refused once, before the model loads, with one line naming both claimants.

Every refine command below names a model file that does not exist: the identity error must come
first (the model would be the next thing to fail), and nothing may be written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_refine_cli import run_cli

from io_fakes import tree_digest
from samrefiner.errors import InputError
from samrefiner.io.coco import CocoDataset
from samrefiner.io.rle import encode_mask

NO_MODEL = ["--model", "/nonexistent/model.pth", "--no-progress"]
SQUARE = [2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]


def image(path: Path, shade: int = 90, size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, shade, shade)).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(size[::-1], np.uint8)
    pixels[3:8, 4:10] = 255
    Image.fromarray(pixels).save(path)
    return path


def coco_file(root: Path, images: list[dict], annotations: list[dict]) -> Path:
    for entry in images:
        if isinstance(entry.get("file_name"), str):
            image(root / "images" / entry["file_name"])
    path = root / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    return path


def entry(image_id: int, name: str) -> dict:
    return {"id": image_id, "file_name": name, "height": 12, "width": 16}


def annotation(annotation_id: int, image_id: int) -> dict:
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "segmentation": [SQUARE]}


def refused(capsys, monkeypatch, tmp_path: Path, *inputs: object) -> str:
    """Run refine; it must exit 2 with one `samrefiner: error:` line, write nothing and leave the
    inputs as they were."""
    before = tree_digest(tmp_path)
    code, stdout, stderr = run_cli(capsys, monkeypatch, "refine", *NO_MODEL, *inputs)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("samrefiner: error: "), stderr
    assert "model" not in lines[0].lower()  # refused before the model was looked at
    assert tree_digest(tmp_path) == before
    return lines[0]


def test_two_annotations_with_one_id_are_refused(tmp_path, capsys, monkeypatch):
    """Before: apply-review with everything accepted wrote #1's mask into #0 (matched by id)."""
    path = coco_file(tmp_path, [entry(1, "a.jpg")], [annotation(7, 1), annotation(8, 1), annotation(7, 1)])
    line = refused(
        capsys, monkeypatch, tmp_path, "--images", tmp_path / "images", "--coco", path, "--out", tmp_path / "o.json"
    )
    assert line.endswith(f"{path}: annotations #0 and #2 have the same id 7: each must be unique")


def test_two_string_ids_and_ids_across_images_are_refused_too(tmp_path):
    images = [entry(1, "a.jpg"), entry(2, "b.jpg")]
    path = coco_file(tmp_path, images, [annotation(5, 1), annotation(5, 2)])
    with pytest.raises(InputError, match=r"annotations #0 and #1 have the same id 5"):
        CocoDataset(tmp_path / "images", path, tmp_path / "o.json")
    path = coco_file(tmp_path, images, [dict(annotation(0, 1), id="x"), dict(annotation(0, 2), id="x")])
    with pytest.raises(InputError, match=r'annotations #0 and #1 have the same id "x"'):
        CocoDataset(tmp_path / "images", path, tmp_path / "o.json")


def test_an_image_id_listed_twice_is_refused(tmp_path, capsys, monkeypatch):
    """Before: the image was refined twice."""
    path = coco_file(tmp_path, [entry(1, "a.jpg"), entry(1, "b.jpg")], [annotation(7, 1)])
    line = refused(
        capsys, monkeypatch, tmp_path, "--images", tmp_path / "images", "--coco", path, "--out", tmp_path / "o.json"
    )
    assert line.endswith(f"{path}: images #0 and #1 have the same id 1: each must be unique")


def test_two_images_with_one_file_name_are_refused(tmp_path, capsys, monkeypatch):
    path = coco_file(tmp_path, [entry(1, "a.jpg"), entry(2, "a.jpg")], [annotation(7, 1), annotation(8, 2)])
    line = refused(
        capsys, monkeypatch, tmp_path, "--images", tmp_path / "images", "--coco", path, "--out", tmp_path / "o.json"
    )
    assert line.endswith(f'{path}: images #0 and #1 have the same file_name "a.jpg": each must be unique')


def test_two_images_claiming_one_mask_are_refused(tmp_path, capsys, monkeypatch):
    """masks/goat/00010.png is an object of goat.jpg and the single mask of goat/00010.jpg.
    Before: refined on goat.jpg, the other image silently skipped."""
    goat, frame = image(tmp_path / "images" / "goat.jpg"), image(tmp_path / "images" / "goat" / "00010.jpg")
    claimed = mask(tmp_path / "masks" / "goat" / "00010.png")
    line = refused(
        capsys,
        monkeypatch,
        tmp_path,
        "--images",
        tmp_path / "images",
        "--masks",
        tmp_path / "masks",
        "--out",
        tmp_path / "o",
    )
    assert line.endswith(f"{claimed}: claimed by two images ({goat} and {frame}): rename one")


def test_two_images_of_one_name_with_a_mask_are_refused(tmp_path, capsys, monkeypatch):
    jpeg, png = image(tmp_path / "images" / "a.jpg"), image(tmp_path / "images" / "a.png", shade=10)
    claimed = mask(tmp_path / "masks" / "a.png")
    line = refused(
        capsys,
        monkeypatch,
        tmp_path,
        "--images",
        tmp_path / "images",
        "--masks",
        tmp_path / "masks",
        "--out",
        tmp_path / "o",
    )
    assert line.endswith(f"{claimed}: claimed by several images ({jpeg} and {png}): keep one")


def test_two_images_claiming_one_label_map_are_refused(tmp_path, capsys, monkeypatch):
    jpeg, png = image(tmp_path / "images" / "a.jpg"), image(tmp_path / "images" / "a.png", shade=10)
    label_map = tmp_path / "maps" / "a.png"
    label_map.parent.mkdir()
    Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8)).save(label_map)
    line = refused(
        capsys,
        monkeypatch,
        tmp_path,
        "--images",
        tmp_path / "images",
        "--label-maps",
        tmp_path / "maps",
        "--out",
        tmp_path / "o",
    )
    assert line.endswith(f"{label_map}: claimed by several images ({jpeg} and {png}): keep one")


def test_eval_refuses_ground_truth_and_predictions_with_repeated_ids(tmp_path, capsys, monkeypatch):
    """Before: eval paired predictions with the last annotation of an id, and scored."""
    rle = encode_mask(np.pad(np.ones((4, 4), bool), ((2, 6), (2, 10))))
    gt = coco_file(tmp_path, [entry(1, "a.jpg")], [annotation(7, 1), annotation(7, 1)])
    good = tmp_path / "pred.json"
    good.write_text(json.dumps([{"id": 7, "image_id": 1, "category_id": 1, "segmentation": rle, "score": 1.0}]))
    code, _, stderr = run_cli(capsys, monkeypatch, "eval", "--gt", gt, "--pred", good)
    assert (
        code == 2
        and stderr.strip() == f"samrefiner: error: {gt}: annotations #0 and #1 have the same id 7: each must be unique"
    )
    gt = coco_file(tmp_path, [entry(1, "a.jpg")], [annotation(7, 1), annotation(8, 1)])
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([{"id": 8, "image_id": 1, "category_id": 1, "segmentation": rle, "score": 1.0}] * 2))
    code, _, stderr = run_cli(capsys, monkeypatch, "eval", "--gt", gt, "--pred", twice)
    assert (
        code == 2
        and stderr.strip()
        == f"samrefiner: error: {twice}: annotations #0 and #1 have the same id 8: each must be unique"
    )


def test_an_image_with_a_mask_folder_and_a_mask_file_is_refused(tmp_path, capsys, monkeypatch):
    """Before: found only when the image was loaded, after the model had loaded."""
    image(tmp_path / "images" / "cat.jpg")
    mask(tmp_path / "masks" / "cat.png")
    mask(tmp_path / "masks" / "cat" / "0.png")
    line = refused(
        capsys,
        monkeypatch,
        tmp_path,
        "--images",
        tmp_path / "images",
        "--masks",
        tmp_path / "masks",
        "--out",
        tmp_path / "o",
    )
    assert line.endswith(
        f"{tmp_path / 'masks' / 'cat'}: image cat also has masks in {tmp_path / 'masks' / 'cat.png'}: keep one"
    )


def test_two_label_maps_of_one_key_are_refused(tmp_path, capsys, monkeypatch):
    """Before: `a.PNG` silently replaced `a.png` (or the other way round)."""
    image(tmp_path / "images" / "a.jpg")
    (tmp_path / "maps").mkdir()
    for name, value in (("a.png", 1), ("a.PNG", 2)):
        Image.fromarray(np.full((12, 16), value, np.uint8)).save(tmp_path / "maps" / name)
    line = refused(
        capsys,
        monkeypatch,
        tmp_path,
        "--images",
        tmp_path / "images",
        "--label-maps",
        tmp_path / "maps",
        "--out",
        tmp_path / "o",
    )
    maps = sorted((tmp_path / "maps").iterdir())
    assert line.endswith(f"several label maps named a ({maps[0]} and {maps[1]}): keep one")


@pytest.mark.parametrize("where", ["image id", "annotation image_id", "annotation id"])
def test_eval_refuses_the_ids_refine_refuses(tmp_path, capsys, monkeypatch, where):
    """An id of 2.0 or true is not an id for refine (that image fails); eval, which scores whole
    files, refuses the file with one line naming the entry (before: it scored, with 2.0 == 2)."""
    images, annotations = [entry(2, "a.jpg")], [annotation(7, 2)]
    if where == "image id":
        images[0]["id"] = annotations[0]["image_id"] = 2.0
    elif where == "annotation image_id":
        annotations[0]["image_id"] = 2.0
    else:
        annotations[0]["id"] = True
    gt = coco_file(tmp_path, images, annotations)
    code, _, stderr = run_cli(capsys, monkeypatch, "eval", "--gt", gt, "--pred", gt)
    kind = "image" if where == "image id" else "annotation"
    key, value = ("id", "true") if where == "annotation id" else (where.split()[-1], "2.0")
    want = f"samrefiner: error: {gt}: {kind} #0: {key} {value} is not an integer (nor a string)"
    assert code == 2 and stderr.strip() == want
    dataset = CocoDataset(tmp_path / "images", gt, tmp_path / "out.json")  # refine: that image fails
    with pytest.raises(InputError, match="is not an integer"):
        dataset.load(next(iter(dataset.refs())))
