"""`samrefiner bench`: coarse row, prompt-setting rows, and the coarse masks it makes from a seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import DATA, SAM_REF
from samrefiner.cli import app
from samrefiner.errors import InputError
from samrefiner.evaluation.bench import COARSE, PROMPT_SETTINGS, labelled_images
from samrefiner.io.images import read_mask


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_prompt_settings_are_table_1():
    assert list(PROMPT_SETTINGS) == ["point", "box", "mask", "point+box", "point+mask", "box+mask", "all"]
    flags = {tuple(setting.values()) for setting in PROMPT_SETTINGS.values()}
    assert len(flags) == 7 and (False, False, False) not in flags


def test_seeded_coarse_masks_are_what_corrupt_writes(runner, one_image, tmp_path):
    images, gt = one_image
    result = runner.invoke(
        app, ["corrupt", "--images", str(images), "--gt", str(gt), "--out", str(tmp_path / "c"), "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    (item,) = list(labelled_images(images, gt, seed=4))
    assert np.array_equal(item.coarse[0], read_mask(tmp_path / "c" / "fullmoon.png"))
    values = np.asarray(Image.open(gt / "fullmoon.png"))  # GrabCut: 128 is void, as in `eval`
    assert np.array_equal(item.gt[0], values == 255) and np.array_equal(item.void[0], values == 128)
    with pytest.raises(InputError):
        next(labelled_images(images, gt))


def test_missing_coarse_mask_is_reported_per_image(one_image, tmp_path):
    images, gt = one_image
    (tmp_path / "coarse").mkdir()
    (tmp_path / "coarse" / "other.png").symlink_to(DATA / "grabcut/gt/fullmoon.png")
    (item,) = list(labelled_images(images, gt, coarse=tmp_path / "coarse"))
    assert isinstance(item, InputError) and "fullmoon" in str(item)


def test_bench_rows_with_the_reduced_model(runner, one_image, tmp_path):
    images, gt = one_image
    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--model",
        str(SAM_REF / "reduced_sam.pth"),
        "--device",
        "cpu",
        "--images",
        str(images),
        "--gt",
        str(gt),
        "--coarse",
        str(gt),
        "--only",
        "mask,all",
        "--iterations",
        "1",
        "--json",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == [COARSE, "mask", "all"]
    assert rows[COARSE]["iou"] == 1.0 and rows[COARSE]["seconds_per_image"] is None
    for name in ("mask", "all"):
        assert rows[name]["count"] == 1 and 0.0 <= rows[name]["iou"] <= 1.0
        assert rows[name]["seconds_per_image"] > 0
    assert "boundary IoU" in result.output and "mBA" in result.output
    bad = runner.invoke(app, [value if value != "mask,all" else "points" for value in args])
    assert isinstance(bad.exception, InputError) and "points" in str(bad.exception)
