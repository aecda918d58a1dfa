"""EXIF orientation: images (and masks) are read upright as viewers show them; --ignore-exif keeps
the stored pixel order. Expected frames come from numpy, not from the reader under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_refine_cli import FAST, load_the_model_once, run_cli  # noqa: F401 (autouse fixture: the model is read once)

from io_fakes import IdentityRefiner
from samrefiner.io.coco import CocoDataset
from samrefiner.io.images import read_image, read_mask
from samrefiner.io.labelmaps import LabelMaps
from samrefiner.io.masks import MaskFolders
from samrefiner.io.rle import encode_mask
from samrefiner.run.runner import run

# pycocotools 2.0 decoding under numpy 2 warns on every call; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
# EXIF orientation -> how the stored pixels become the upright picture
UPRIGHT = {
    2: np.fliplr,  # mirrored left-right
    3: lambda pixels: np.rot90(pixels, 2),  # upside down
    4: np.flipud,  # mirrored top-bottom
    6: lambda pixels: np.rot90(pixels, -1),  # stored on its side: turn 90 degrees clockwise
}
STORED_SIZE = (30, 50)  # rows, columns as stored


def stored_pixels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (*STORED_SIZE, 3), dtype=np.uint8)


def save_with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def upright_mask(shape: tuple[int, int]) -> np.ndarray:
    """A mask drawn on the upright picture: an L shape, so that any turn or flip changes it."""
    mask = np.zeros(shape, bool)
    mask[2:12, 3:20] = True
    mask[2 : shape[0] - 2, 3:8] = True
    return mask


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_images_are_read_upright_unless_exif_is_ignored(tmp_path, orientation):
    pixels = stored_pixels()
    save_with_orientation(tmp_path / "photo.png", pixels, orientation)
    np.testing.assert_array_equal(read_image(tmp_path / "photo.png"), UPRIGHT[orientation](pixels))
    np.testing.assert_array_equal(read_image(tmp_path / "photo.png", ignore_exif=True), pixels)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_masks_drawn_on_the_upright_image_refine_aligned(tmp_path, orientation):
    pixels = stored_pixels()
    upright = UPRIGHT[orientation](pixels)
    mask = upright_mask(upright.shape[:2])
    save_with_orientation(tmp_path / "images" / "photo.png", pixels, orientation)
    (tmp_path / "masks" / "photo").mkdir(parents=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / "photo" / "0.png")
    dataset = MaskFolders(tmp_path / "images", tmp_path / "masks", tmp_path / "out")

    sample = dataset.load(dataset.refs()[0])
    np.testing.assert_array_equal(sample.image, upright)  # what the refiner is given
    np.testing.assert_array_equal(sample.masks[0], mask)
    summary = run(dataset, IdentityRefiner(), progress=False)

    assert summary.failures == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "photo" / "0.png"), mask)


def test_ignore_exif_pairs_masks_with_the_stored_pixels(tmp_path):
    pixels = stored_pixels()
    save_with_orientation(tmp_path / "images" / "photo.png", pixels, 6)
    (tmp_path / "masks" / "photo").mkdir(parents=True)
    Image.fromarray(upright_mask(STORED_SIZE).astype(np.uint8) * 255).save(tmp_path / "masks" / "photo" / "0.png")
    dataset = MaskFolders(tmp_path / "images", tmp_path / "masks", tmp_path / "out", ignore_exif=True)
    np.testing.assert_array_equal(dataset.load(dataset.refs()[0]).image, pixels)


def test_a_mask_file_with_an_orientation_is_read_upright_too(tmp_path):
    mask = upright_mask(STORED_SIZE)
    stored = np.rot90(mask, 1)  # turned so that orientation 6 brings it back
    save_with_orientation(tmp_path / "m.png", stored.astype(np.uint8) * 255, 6)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", ignore_exif=True), stored)


def test_label_maps_and_coco_hand_the_refiner_the_upright_image(tmp_path):
    pixels = stored_pixels()
    upright = UPRIGHT[3](pixels)
    save_with_orientation(tmp_path / "images" / "photo.png", pixels, 3)
    (tmp_path / "maps").mkdir()
    Image.fromarray(upright_mask(STORED_SIZE).astype(np.uint8) * 7).save(tmp_path / "maps" / "photo.png")
    maps = LabelMaps(tmp_path / "images", tmp_path / "maps", tmp_path / "out")
    np.testing.assert_array_equal(maps.load(maps.refs()[0]).image, upright)

    annotation = {"id": 1, "image_id": 5, "category_id": 1, "segmentation": encode_mask(upright_mask(STORED_SIZE))}
    (tmp_path / "coco.json").write_text(json.dumps([annotation]))
    (tmp_path / "ids").mkdir()
    save_with_orientation(tmp_path / "ids" / "5.png", pixels, 3)
    for ignore_exif, expected in ((False, upright), (True, pixels)):
        coco = CocoDataset(tmp_path / "ids", tmp_path / "coco.json", tmp_path / "out.json", ignore_exif=ignore_exif)
        np.testing.assert_array_equal(coco.load(coco.refs()[0]).image, expected)


def test_refine_cli_ignore_exif(tmp_path, capsys, monkeypatch):
    pixels = stored_pixels()
    save_with_orientation(tmp_path / "images" / "photo.png", pixels, 6)
    (tmp_path / "masks" / "photo").mkdir(parents=True)
    Image.fromarray(upright_mask(STORED_SIZE).astype(np.uint8) * 255).save(tmp_path / "masks" / "photo" / "0.png")
    args = ["refine", *FAST, "--images", tmp_path / "images", "--masks", tmp_path / "masks"]

    code, out, _ = run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "upright")
    assert code == 1 and "1 failed" in out  # the stored-frame mask does not fit the upright image
    assert "mask is 50x30 but image" in (tmp_path / "upright" / "errors.txt").read_text()

    code, out, _ = run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "stored", "--ignore-exif")
    assert code == 0 and out.startswith("1 images, 1 objects refined")
