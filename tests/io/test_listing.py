"""One listing of images, masks and maps (`samrefiner.io.listing`) for every command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_eval_cli import run_eval, runner, square  # noqa: F401  (the fixture)

from io_fakes import IdentityRefiner
from samrefiner.errors import InputError
from samrefiner.io.images import write_png
from samrefiner.io.masks import MaskFolders
from samrefiner.review.datasets import pair_format
from samrefiner.run.runner import run


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_the_rule_any_case_hidden_skipped_keys_without_suffix(tmp_path):
    from samrefiner.io.listing import (  # new in this change
        IMAGE_SUFFIXES,
        MAP_SUFFIXES,
        list_files,
    )

    upper, lower, nested = touch(tmp_path / "A.PNG"), touch(tmp_path / "b.png"), touch(tmp_path / "c" / "d.Png")
    touch(tmp_path / "._b.png")  # macOS AppleDouble
    touch(tmp_path / ".samrefiner" / "e.png")  # a run's bookkeeping
    touch(tmp_path / "notes.txt")
    both = [touch(tmp_path / "f.jpg"), touch(tmp_path / "f.png")]
    assert list_files(tmp_path, MAP_SUFFIXES) == {"A": [upper], "b": [lower], "c/d": [nested], "f": [both[1]]}
    assert list_files(tmp_path, IMAGE_SUFFIXES)["f"] == both  # one key, two files: the caller refuses it
    with pytest.raises(InputError, match=r"notes\.txt: not a folder of masks"):
        list_files(tmp_path / "notes.txt", MAP_SUFFIXES, "masks")


def test_eval_reads_the_upper_case_masks_refine_reads(runner, tmp_path):  # noqa: F811
    """Before: eval skipped `*.PNG` ground truth (count 1 of 2, nothing reported missing)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_png(gt / "img" / "0.png", square(0, 0, 4))
    write_png(gt / "img" / "1.PNG", square(2, 2, 6))
    write_png(pred / "img" / "0.png", square(0, 0, 4))

    scores = run_eval(runner, tmp_path, gt, pred, "--format", "masks")

    assert scores["count"] == 2
    assert scores["missing"] == [str(pred / "img" / "1.PNG")]
    write_png(pred / "img" / "1.png", square(2, 2, 6))  # the refined output's name: paired by key
    scores = run_eval(runner, tmp_path, gt, pred, "--format", "masks")
    assert (scores["count"], scores["iou"], scores["missing"]) == (2, 1.0, [])


def test_refine_and_eval_count_the_same_masks(runner, tmp_path):  # noqa: F811
    images, masks = tmp_path / "images", tmp_path / "masks"
    for index, name in enumerate(("a/0.PNG", "a/1.png", "b/0.Png")):
        write_png(masks / name, square(index, index, 4))
    for stem in ("a", "b"):
        images.mkdir(exist_ok=True)
        Image.new("RGB", (10, 10)).save(images / f"{stem}.JPG")
    summary = run(MaskFolders(images, masks, tmp_path / "out"), IdentityRefiner(), progress=False)
    scores = run_eval(runner, tmp_path, masks, tmp_path / "out", "--format", "masks")
    assert summary.images == 2 and scores["count"] == 3 and scores["iou"] == 1.0 and not scores["missing"]


def test_review_detects_label_maps_stored_as_upper_case_png(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8)).save(maps / "a.PNG")
    assert pair_format(maps, tmp_path / "no-run") == "label-maps"


def test_yolo_images_follow_the_one_listing_hidden_files_skipped(tmp_path):
    from test_io_yolo import build_yolo

    from samrefiner.io.yolo import YoloDataset

    build_yolo(tmp_path / "yolo", stems=("0",), davis=False)
    for folder, name in (("images", "._0.jpg"), ("labels", "._0.txt")):  # macOS resource forks
        (tmp_path / "yolo" / folder / "val" / name).write_bytes(b"\x00\x05\x16\x07")
    dataset = YoloDataset(tmp_path / "yolo", tmp_path / "out")
    assert [ref.key for ref in dataset.refs()] == ["images/val/0"]
