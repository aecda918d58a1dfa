"""Resume by content: a resumed run refuses a changed whole-run input (a COCO file) with one line
naming it, redoes exactly the images whose own input files changed, and names its records by a
digest, so any file name the file system takes works."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_io_runner import make_dataset, scores_keys, spy_on_writes
from test_run_manifest import fake_build_refiner, run_cli

import samrefiner.commands.refine as refine_module
from io_fakes import BoxRefiner, IdentityRefiner, tree_digest
from samrefiner.io.masks import MaskFolders
from samrefiner.run.runner import run

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def box_polygon(top: int, left: int) -> list[list[float]]:
    return [[left, top, left + 8, top, left + 8, top + 6, left, top + 6]]


def coco_file(root: Path, fixed: bool) -> tuple[Path, Path]:
    """Three 24x32 images; annotation 20 of image 2 a broken RLE, or (`fixed`) replaced in place
    by two good annotations 20 and 21, as a user fixes the file."""
    images = root / "images"
    images.mkdir(exist_ok=True)
    for image_id in (1, 2, 3):
        Image.fromarray(np.full((24, 32, 3), 40 * image_id, np.uint8)).save(images / f"{image_id}.png")
    broken = {"size": [24, 32], "counts": [5, 5]}
    second = (
        [{"id": 20, "image_id": 2, "category_id": 1, "segmentation": box_polygon(2, 2)},
         {"id": 21, "image_id": 2, "category_id": 1, "segmentation": box_polygon(12, 12)}]
        if fixed
        else [{"id": 20, "image_id": 2, "category_id": 1, "segmentation": broken}]
    )  # fmt: skip
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "segmentation": box_polygon(1, 1)},
        *second,
        {"id": 30, "image_id": 3, "category_id": 1, "segmentation": box_polygon(3, 3)},
        {"id": 31, "image_id": 3, "category_id": 1, "segmentation": box_polygon(14, 20)},
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 24, "width": 32} for i in (1, 2, 3)],
        "annotations": [dict(annotation, iscrowd=0) for annotation in annotations],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return images, path


def test_a_coco_file_fixed_in_place_is_refused_by_resume_naming_it(capsys, monkeypatch, tmp_path):
    """The issue's case: output ids [10, 20, 30, 31, 31] for input ids [10, 20, 21, 30, 31] (records
    pointed at annotations by their position in the old file)."""
    monkeypatch.setattr(refine_module, "build_refiner", fake_build_refiner)
    images, coco = coco_file(tmp_path, fixed=False)
    out = tmp_path / "refined.json"
    args = ["--images", images, "--coco", coco, "--out", out, "--model", "m"]
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 1 and "annotation id 20" in (tmp_path / "refined.errors.txt").read_text(), err
    coco_file(tmp_path, fixed=True)
    before = tree_digest(tmp_path / "refined.json", tmp_path / "refined.work" / "records")

    code, _, err = run_cli(capsys, monkeypatch, *args, "--resume")

    assert code == 2 and err.count("\n") == 1, err
    assert f"{coco.resolve()} changed since" in err and "--resume" in err
    assert tree_digest(tmp_path / "refined.json", tmp_path / "refined.work" / "records") == before
    code, _, err = run_cli(capsys, monkeypatch, *args, "--overwrite")
    assert code == 0, err
    assert [annotation["id"] for annotation in json.loads(out.read_text())["annotations"]] == [10, 20, 21, 30, 31]


def test_resume_redoes_exactly_the_images_whose_input_files_changed(tmp_path):
    images, masks = make_dataset(tmp_path)
    out = tmp_path / "out"
    run(MaskFolders(images, masks, out), IdentityRefiner(), progress=False)
    changed = np.zeros((24, 32), np.uint8)
    changed[5:15, 5:25] = 255
    Image.fromarray(changed).save(masks / "img1" / "b.png")  # an edited mask
    Image.fromarray(changed).save(masks / "img3" / "c.png")  # a mask added to an image
    touched = images / "img4.png"  # written again with the same bytes: not a change
    touched.write_bytes(touched.read_bytes())
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))

    dataset = MaskFolders(images, masks, out)
    written = spy_on_writes(dataset)
    summary = run(dataset, IdentityRefiner(), resume=True, progress=False)

    assert written == ["img1", "img3"]
    assert (summary.images, summary.skipped, summary.changed) == (
        2, 4, [f"{masks / 'img1' / 'b.png'}: changed", f"{masks / 'img3' / 'c.png'}: added"]
    )  # fmt: skip
    assert "2 redone, their inputs changed" in str(summary)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "img1" / "b.png")), changed)
    assert (out / "img3" / "c.png").is_file() and scores_keys(out) == [f"img{index}" for index in range(6)]
    again = MaskFolders(images, masks, out)
    rewritten = spy_on_writes(again)
    assert run(again, IdentityRefiner(), resume=True, progress=False).skipped == 6 and rewritten == []


def test_any_file_name_the_file_system_takes_runs_and_resumes(tmp_path):
    """A 30-character CJK name: its percent-encoded record name (270 bytes) was `File name too long`."""
    name = "東京都渋谷区の夕暮れと猫の写真集第一巻より抜粋された画像です"[:30]
    images, masks = tmp_path / "images", tmp_path / "masks"
    (masks / name).mkdir(parents=True)
    images.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images / f"{name}.png")
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 4:20] = 255
    Image.fromarray(mask).save(masks / name / "a.png")

    first = run(MaskFolders(images, masks, tmp_path / "out"), BoxRefiner(), progress=False)
    assert (first.images, first.failures) == (1, 0)
    second = run(MaskFolders(images, masks, tmp_path / "out"), BoxRefiner(), resume=True, progress=False)
    assert (second.images, second.skipped, second.failures) == (0, 1, 0)
    assert scores_keys(tmp_path / "out") == [name]


def test_a_file_name_of_253_bytes_is_written_and_resumed(tmp_path):
    """The longest names: `<83 CJK characters>.png` (253 bytes) as image and mask; the temporary file
    of each atomic write was named after its target plus 14 bytes: `File name too long`."""
    name = "猫" * 83
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images / f"{name}.png")
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 4:20] = 255
    Image.fromarray(mask).save(masks / f"{name}.png")
    first = run(MaskFolders(images, masks, tmp_path / "out"), BoxRefiner(), progress=False)
    assert (first.images, first.failures) == (1, 0), first.failed
    assert (tmp_path / "out" / f"{name}.png").is_file() and not list((tmp_path / "out").rglob("*.tmp"))
    second = run(MaskFolders(images, masks, tmp_path / "out"), BoxRefiner(), resume=True, progress=False)
    assert (second.images, second.skipped) == (0, 1)
