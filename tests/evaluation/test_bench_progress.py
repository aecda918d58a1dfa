"""`samrefiner bench` shows a progress bar on stderr over images x prompt settings (`--no-progress` hides it)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from conftest import DATA, SAM_REF
from samrefiner.cli import app
from samrefiner.evaluation.bench import LabelledImages


@pytest.fixture()
def two_images(tmp_path):
    """Two GrabCut images with their ground truth (symlinks), used as their own coarse masks."""
    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    for name in ("fullmoon", "banana1"):
        suffix = next((DATA / "grabcut/images").glob(f"{name}.*")).suffix
        (images / f"{name}{suffix}").symlink_to(DATA / f"grabcut/images/{name}{suffix}")
        (gt / f"{name}.png").symlink_to(DATA / f"grabcut/gt/{name}.png")
    return images, gt


def test_labelled_images_know_their_count(two_images):
    images, gt = two_images
    assert len(LabelledImages(images, gt, coarse=gt)) == 2
    assert len(LabelledImages(images, gt, coarse=gt, limit=1)) == 1


@pytest.mark.parametrize("flag, limit", [("--progress", "2"), ("--no-progress", "1")])
def test_bench_progress_bar(two_images, tmp_path, flag, limit):
    images, gt = two_images
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
        "box,all",
        "--iterations",
        "1",
        "--limit",
        limit,
        flag,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "boundary IoU" in result.stdout  # the table itself is unchanged, on stdout
    bar = re.findall(r"bench:\s+\d+%.*?\| (\d+)/(\d+)", result.stderr)
    if flag == "--progress":
        assert bar and bar[-1] == ("4", "4")  # 2 images x 2 settings, all done
    else:
        assert result.stderr == ""
