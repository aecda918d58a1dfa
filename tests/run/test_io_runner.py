"""The batch runner: sharding, failures recorded and skipped, resuming after a kill exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from io_fakes import IdentityRefiner
from samrefiner.errors import InputError
from samrefiner.io.datasets import SampleRef
from samrefiner.io.masks import MaskFolders
from samrefiner.run.records import RecordStore
from samrefiner.run.runner import run
from samrefiner.run.shards import Shard

IMAGES = 6


def make_dataset(root: Path, count: int = IMAGES) -> tuple[Path, Path]:
    """`count` small images, each with two object masks (a.png, b.png)."""
    rng = np.random.default_rng(1)
    for index in range(count):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks" / f"img{index}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "images" / f"img{index}.png")
        for name, rows in (("a", slice(2, 10)), ("b", slice(12, 20))):
            mask = np.zeros((24, 32), np.uint8)
            mask[rows, 4 + index : 20 + index] = 255
            Image.fromarray(mask).save(root / "masks" / f"img{index}" / f"{name}.png")
    return root / "images", root / "masks"


def spy_on_writes(dataset: MaskFolders) -> list[str]:
    """The keys of the images whose outputs the dataset writes, in order."""
    written: list[str] = []
    write = dataset.write

    def recording_write(sample, result):
        written.append(sample.ref.key)
        return write(sample, result)

    dataset.write = recording_write
    return written


class InterruptedRefiner(IdentityRefiner):
    """Raises KeyboardInterrupt (Ctrl-C) on its `at`-th call."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def refine(self, image, masks):
        if len(self.calls) + 1 == self.at:
            raise KeyboardInterrupt
        return super().refine(image, masks)


def scores_keys(out: Path) -> list[str]:
    return [json.loads(line)["image"] for line in (out / "scores.jsonl").read_text().splitlines()]


def test_shards_take_every_nth_image_from_the_kth():
    refs = [SampleRef(str(index), str(index)) for index in range(7)]
    assert [ref.key for ref in Shard.parse("1/3").select(refs)] == ["1", "4"]
    assert [ref.key for ref in Shard.parse("0/1").select(refs)] == [str(index) for index in range(7)]
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(InputError, match=f"^{bad}: ") as refused:
            Shard.parse(bad)
        assert "--shard" not in str(refused.value)  # the library names no option; the CLI adds it


def test_shards_together_cover_the_dataset_once_and_merge_into_one_scores_file(tmp_path):
    images, masks = make_dataset(tmp_path)
    written: list[str] = []
    for index in range(3):
        dataset = MaskFolders(images, masks, tmp_path / "out")
        shard_written = spy_on_writes(dataset)
        run(dataset, IdentityRefiner(), shard=Shard(index, 3), progress=False)
        assert shard_written == [f"img{number}" for number in range(index, IMAGES, 3)]
        written += shard_written
    assert sorted(written) == [f"img{index}" for index in range(IMAGES)]
    assert scores_keys(tmp_path / "out") == [f"img{index}" for index in range(IMAGES)]


def test_a_run_interrupted_part_way_and_resumed_refines_every_image_exactly_once(tmp_path):
    images, masks = make_dataset(tmp_path)
    first = MaskFolders(images, masks, tmp_path / "out")
    written_first = spy_on_writes(first)
    with pytest.raises(KeyboardInterrupt):
        run(first, InterruptedRefiner(at=4), progress=False)
    assert written_first == ["img0", "img1", "img2"]

    second = MaskFolders(images, masks, tmp_path / "out")
    written_second = spy_on_writes(second)
    summary = run(second, IdentityRefiner(), resume=True, progress=False)

    assert written_second == ["img3", "img4", "img5"]
    assert (summary.images, summary.skipped, summary.failures) == (3, 3, 0)
    assert scores_keys(tmp_path / "out") == [f"img{index}" for index in range(IMAGES)]


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import samrefiner.io.masks as masks_module
    from io_fakes import IdentityRefiner
    from samrefiner.io.masks import MaskFolders
    from samrefiner.run.runner import run

    root, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    files = []
    write_png = masks_module.write_png

    def write_then_die(path, array, palette=None):
        write_png(path, array, palette)
        files.append(path)
        if len(files) == kill_at:  # in the middle of an image: one of its two masks is written
            os.kill(os.getpid(), signal.SIGKILL)

    masks_module.write_png = write_then_die
    run(MaskFolders(root / "images", root / "masks", root / "out"), IdentityRefiner(), progress=False)
    """
)


def test_a_killed_process_resumes_without_loss_or_duplicates(tmp_path):
    images, masks = make_dataset(tmp_path)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path), "5"], env=environment, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()
    finished_before = RecordStore(tmp_path / "out" / ".samrefiner").finished(f"img{index}" for index in range(IMAGES))
    assert finished_before == {"img0", "img1"}  # img2 had one mask written, no record
    assert (tmp_path / "out" / "img2" / "a.png").exists() and not (tmp_path / "out" / "img2" / "b.png").exists()

    dataset = MaskFolders(images, masks, tmp_path / "out")
    written = spy_on_writes(dataset)
    summary = run(dataset, IdentityRefiner(), resume=True, progress=False)

    assert written == ["img2", "img3", "img4", "img5"]
    assert summary.skipped == 2
    assert scores_keys(tmp_path / "out") == [f"img{index}" for index in range(IMAGES)]
    for index in range(IMAGES):
        for name in ("a", "b"):
            expected = np.asarray(Image.open(masks / f"img{index}" / f"{name}.png"))
            np.testing.assert_array_equal(
                np.asarray(Image.open(tmp_path / "out" / f"img{index}" / f"{name}.png")), expected
            )
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_failed_images_give_one_line_each_the_run_goes_on_and_resume_retries_them(tmp_path):
    images, masks = make_dataset(tmp_path)
    (images / "img1.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "img3" / "b.png")
    out = tmp_path / "out"

    summary = run(MaskFolders(images, masks, out), IdentityRefiner(), progress=False)

    assert (summary.images, summary.failures) == (IMAGES - 2, 2)
    lines = (out / "errors.txt").read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{images / 'img1.png'}: not a readable image")
    assert lines[1] == f"{masks / 'img3' / 'b.png'}: mask is 10x10 but image {images / 'img3.png'} is 32x24"
    assert "img1" not in scores_keys(out) and len(scores_keys(out)) == IMAGES - 2

    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images / "img1.png")
    dataset = MaskFolders(images, masks, out)
    written = spy_on_writes(dataset)
    summary = run(dataset, IdentityRefiner(), resume=True, progress=False)
    assert written == ["img1"] and summary.failures == 1
    assert (out / "errors.txt").read_text().count("\n") == 1


def test_limit_counts_images_of_this_shard_and_errors_of_a_shard_get_their_own_file(tmp_path):
    images, masks = make_dataset(tmp_path)
    (images / "img4.png").write_bytes(b"")
    dataset = MaskFolders(images, masks, tmp_path / "out")
    written = spy_on_writes(dataset)
    summary = run(dataset, IdentityRefiner(), shard=Shard(0, 2), limit=3, progress=False)
    assert written == ["img0", "img2"] and summary.failures == 1
    assert (tmp_path / "out" / "errors.shard-0-of-2.txt").read_text().startswith(str(images / "img4.png"))
