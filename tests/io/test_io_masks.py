"""Per-object mask folders: layouts found, masks read and written back with names, sizes, values."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from io_fakes import BoxRefiner, IdentityRefiner, box_mask, tree_digest
from samrefiner.errors import InputError
from samrefiner.io.images import read_mask
from samrefiner.io.masks import MaskFolders
from samrefiner.run.runner import run

DAVIS = DATA / "davis2016"


def davis_subset(root: Path, frames: dict[str, list[str]]) -> tuple[Path, Path]:
    """Copy a few DAVIS frames (JPEGImages/<seq>/<frame>.jpg, Annotations/<seq>/<frame>.png)."""
    for sequence, names in frames.items():
        for name in names:
            for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                target = root / folder / sequence / f"{name}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(DAVIS / folder / sequence / f"{name}{suffix}", target)
    return root / "JPEGImages", root / "Annotations"


def write_mask(path: Path, mask: np.ndarray, foreground: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * foreground).save(path)


def test_davis_layout_round_trips_names_sizes_and_pixels(tmp_path):
    images, masks = davis_subset(tmp_path, {"blackswan": ["00000", "00010"], "cows": ["00000"]})
    before = tree_digest(images, masks)
    dataset = MaskFolders(images, masks, tmp_path / "out")
    assert [ref.key for ref in dataset.refs()] == ["blackswan/00000", "blackswan/00010", "cows/00000"]

    summary = run(dataset, IdentityRefiner(), progress=False)

    assert (summary.images, summary.objects, summary.failures) == (3, 3, 0)
    for source in sorted(masks.rglob("*.png")):
        written = tmp_path / "out" / source.relative_to(masks)
        assert Image.open(written).size == Image.open(source).size
        assert set(np.unique(np.asarray(Image.open(written)))) <= {0, 255}
        np.testing.assert_array_equal(read_mask(written), read_mask(source))
    assert tree_digest(images, masks) == before


def test_object_folders_keep_file_names_and_the_0_1_or_0_255_encoding(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "images" / "cat.png")
    disc = np.hypot(*np.mgrid[-20:20, -30:30]) < 12
    blob = np.zeros((40, 60), bool)
    blob[5:9, 40:55] = True
    blob[30:33, 2:6] = True
    write_mask(tmp_path / "masks" / "cat" / "disc.png", disc, 1)
    write_mask(tmp_path / "masks" / "cat" / "blob.png", blob, 255)

    run(MaskFolders(tmp_path / "images", tmp_path / "masks", tmp_path / "out"), BoxRefiner(), progress=False)

    disc_out = np.asarray(Image.open(tmp_path / "out" / "cat" / "disc.png"))
    blob_out = np.asarray(Image.open(tmp_path / "out" / "cat" / "blob.png"))
    assert disc_out.shape == blob_out.shape == (40, 60)
    np.testing.assert_array_equal(disc_out, box_mask(disc).astype(np.uint8))  # 0/1 in, 0/1 out
    np.testing.assert_array_equal(blob_out, box_mask(blob).astype(np.uint8) * 255)


def test_a_mask_folder_without_its_image_or_of_another_size_is_an_input_error(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "images" / "small.jpg")
    write_mask(tmp_path / "masks" / "small" / "0.png", np.ones((21, 30), bool), 255)
    write_mask(tmp_path / "masks" / "ghost" / "0.png", np.ones((20, 30), bool), 255)
    dataset = MaskFolders(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    refs = {ref.key: ref for ref in dataset.refs()}

    with pytest.raises(InputError, match=r"small/0\.png: mask is 30x21 but image .*small\.jpg is 30x20"):
        dataset.load(refs["small"])
    with pytest.raises(InputError, match=r"ghost.*no image named ghost\.\*"):
        dataset.load(refs["ghost"])
