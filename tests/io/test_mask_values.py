"""The mask-value rule (samrefiner.io.maskvalues): what is object in mask files and in arrays."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from io_fakes import BoxRefiner, IdentityRefiner, box_mask
from samrefiner.errors import InputError, InputWarning
from samrefiner.io.images import read_mask
from samrefiner.io.masks import MaskFolders
from samrefiner.refine import as_masks
from samrefiner.run.runner import run

SIZE = (40, 60)


def blob() -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    mask[8:30, 10:25] = True
    mask[12:20, 25:50] = True  # an L shape: its box differs from it
    return mask


def dataset_of(tmp_path: Path, name: str, pixels: np.ndarray, **save) -> MaskFolders:
    """One image `cat` with one mask file `masks/cat/<name>` holding `pixels`."""
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(
        tmp_path / "images" / "cat.png"
    )
    (tmp_path / "masks" / "cat").mkdir(parents=True, exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(tmp_path / "masks" / "cat" / name, **save)
    return MaskFolders(tmp_path / "images", tmp_path / "masks", tmp_path / "out")


def loaded_mask(dataset: MaskFolders) -> np.ndarray:
    (ref,) = dataset.refs()
    sample = dataset.load(ref)
    assert sample.masks.shape == (1, *SIZE)
    return sample.masks[0]


def test_a_red_object_on_black_is_read_and_written_back_red(tmp_path):
    pixels = np.zeros((*SIZE, 3), np.uint8)
    pixels[blob()] = (200, 0, 0)
    dataset = dataset_of(tmp_path, "red.png", pixels)
    np.testing.assert_array_equal(loaded_mask(dataset), blob())

    run(dataset, BoxRefiner(), progress=False)

    written = np.asarray(Image.open(tmp_path / "out" / "cat" / "red.png"))
    expected = np.zeros((*SIZE, 3), np.uint8)
    expected[box_mask(blob())] = (200, 0, 0)
    np.testing.assert_array_equal(written, expected)


def test_a_0_100_mask_is_its_object_and_comes_back_0_100(tmp_path):
    dataset = dataset_of(tmp_path, "hundred.png", blob().astype(np.uint8) * 100)
    np.testing.assert_array_equal(loaded_mask(dataset), blob())

    run(dataset, BoxRefiner(), progress=False)

    written = np.asarray(Image.open(tmp_path / "out" / "cat" / "hundred.png"))
    np.testing.assert_array_equal(written, box_mask(blob()).astype(np.uint8) * 100)


def test_a_palette_mask_with_one_index_keeps_index_and_palette(tmp_path):
    image = Image.fromarray(blob().astype(np.uint8) * 3, mode="L").convert("P")
    palette = [value for index in range(256) for value in (index, (5 * index) % 256, 255 - index)]
    image.putpalette(palette)
    dataset = dataset_of(tmp_path, "p.png", image)
    np.testing.assert_array_equal(loaded_mask(dataset), blob())

    run(dataset, IdentityRefiner(), progress=False)

    written = Image.open(tmp_path / "out" / "cat" / "p.png")
    assert written.mode == "P" and written.getpalette() == palette
    np.testing.assert_array_equal(np.asarray(written), blob().astype(np.uint8) * 3)


def test_a_palette_png_with_several_ids_is_refused_naming_file_ids_and_instance_maps(tmp_path):
    ids = np.zeros(SIZE, np.uint8)
    ids[5:15, 5:15], ids[20:35, 30:50] = 1, 2
    image = Image.fromarray(ids, mode="L").convert("P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    dataset = dataset_of(tmp_path, "00000.png", image)
    with pytest.raises(InputError, match=r"cat/00000\.png: holds 2 object values \(1, 2\).*instance maps"):
        loaded_mask(dataset)


def test_several_colours_are_refused_naming_them(tmp_path):
    pixels = np.zeros((*SIZE, 3), np.uint8)
    pixels[5:15, 5:15], pixels[20:35, 30:50] = (255, 0, 0), (0, 255, 0)
    with pytest.raises(InputError, match=r"two\.png: holds 2 colours besides black \(#ff0000, #00ff00\)"):
        loaded_mask(dataset_of(tmp_path, "two.png", pixels))


def test_rgba_with_a_transparent_white_background_is_its_opaque_pixels(tmp_path):
    pixels = np.full((*SIZE, 4), 255, np.uint8)
    pixels[..., 3] = np.where(blob(), 255, 0)
    np.testing.assert_array_equal(loaded_mask(dataset_of(tmp_path, "cut.png", pixels)), blob())


def test_a_soft_mask_is_refused_not_split(tmp_path):
    # CascadePSP's soft coarse mask: RGBA, 15 grey levels; no threshold is assumed for it
    with pytest.raises(InputError, match=r"motorbike\.png: holds 14 colours besides black"):
        read_mask(DATA / "cascadepsp" / "motorbike.png")


def test_grabcut_trimaps_keep_their_band_as_object():
    path = next(iter(sorted((DATA / "grabcut" / "gt").glob("*"))))
    values = np.asarray(Image.open(path).convert("L"))
    assert set(np.unique(values).tolist()) == {0, 128, 255}
    np.testing.assert_array_equal(read_mask(path), values >= 128)


def test_a_jpeg_mask_is_thresholded_at_half_its_maximum_with_a_warning_and_written_as_png(tmp_path):
    with warnings.catch_warnings(record=True) as dataset_warnings:
        warnings.simplefilter("always")
        dataset = dataset_of(tmp_path, "object.jpg", blob().astype(np.uint8) * 255, quality=60)
    assert [str(w.message) for w in dataset_warnings if w.category is InputWarning] == [
        f"{tmp_path / 'masks'}: 1 mask(s) are JPEG/WebP (e.g. {tmp_path / 'masks' / 'cat' / 'object.jpg'}): "
        "each is a lossy (JPEG) mask, thresholded at half its maximum; refined masks are written as PNG"
    ]
    stored = np.asarray(Image.open(tmp_path / "masks" / "cat" / "object.jpg"))
    assert len(np.unique(stored)) > 2  # the file really is noisy
    np.testing.assert_array_equal(loaded_mask(dataset), stored.astype(int) * 2 >= stored.max())
    assert (loaded_mask(dataset) == blob()).mean() > 0.99

    run(dataset, BoxRefiner(), progress=False)

    written = np.asarray(Image.open(tmp_path / "out" / "cat" / "object.png"))
    np.testing.assert_array_equal(written, box_mask(loaded_mask(dataset)).astype(np.uint8) * 255)
    assert not (tmp_path / "out" / "cat" / "object.jpg").exists()
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert record["objects"][0]["id"] == "object.jpg"
    assert record["objects"][0]["warning"] == "lossy (JPEG) mask, thresholded at half its maximum"


def test_a_png_and_a_jpeg_of_one_name_are_refused_before_any_image_is_read(tmp_path):
    dataset_of(tmp_path, "a.png", blob().astype(np.uint8) * 255)
    with (
        warnings.catch_warnings(),
        pytest.raises(InputError, match=r"a\.png: both it and a\.jpg would be written as a\.png"),
    ):
        warnings.simplefilter("ignore", InputWarning)
        dataset_of(tmp_path, "a.jpg", blob().astype(np.uint8) * 255)


class TestArrays:
    """Arrays given to Refiner.refine follow the same rule (refine() calls as_masks)."""

    def test_bool_and_one_value_per_mask_are_objects(self):
        masks = np.stack([blob().astype(np.uint8) * 100, blob().astype(np.uint8), np.zeros(SIZE, np.uint8)])
        np.testing.assert_array_equal(as_masks(masks, SIZE), [blob(), blob(), np.zeros(SIZE, bool)])
        np.testing.assert_array_equal(as_masks([blob(), blob().astype(np.uint8) * 255], SIZE), [blob(), blob()])

    def test_a_jpeg_decoded_array_is_refused_not_turned_into_foreground(self, tmp_path):
        Image.fromarray(blob().astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=60)
        noisy = np.asarray(Image.open(tmp_path / "m.jpg"))
        with pytest.raises(InputError, match=r"image: mask 0: holds \d+ object values .*threshold"):
            as_masks(noisy[None], SIZE)

    def test_an_id_map_array_is_refused(self):
        ids = np.zeros(SIZE, np.int64)
        ids[:5], ids[-5:] = 1, 2
        with pytest.raises(InputError, match=r"mask 1: holds 2 object values \(1, 2\)"):
            as_masks([blob().astype(np.int64), ids], SIZE)


def test_refine_cli_reads_coloured_and_jpeg_masks_and_warns_in_one_line(tmp_path, capsys, monkeypatch):
    from test_refine_cli import FAST, run_cli

    Image.open(DATA / "voc_example" / "2007_000256.jpg").save(tmp_path / "photo.png")
    (tmp_path / "images").mkdir()
    (tmp_path / "photo.png").rename(tmp_path / "images" / "photo.png")
    coarse = read_mask(DATA / "voc_example" / "2007_000256_init_mask.png")
    red = np.zeros((*coarse.shape, 3), np.uint8)
    red[coarse] = (255, 0, 0)
    (tmp_path / "masks" / "photo").mkdir(parents=True)
    Image.fromarray(red).save(tmp_path / "masks" / "photo" / "red.png")
    Image.fromarray(coarse.astype(np.uint8) * 255).save(tmp_path / "masks" / "photo" / "lossy.jpg", quality=75)

    code, out, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        tmp_path / "images",
        "--masks",
        tmp_path / "masks",
        "--out",
        tmp_path / "out",
    )

    assert code == 0 and out.startswith("1 images, 2 objects refined")
    assert err.splitlines()[0].startswith(f"samrefiner: warning: {tmp_path / 'masks'}: 1 mask(s) are JPEG/WebP")
    record = json.loads((tmp_path / "out" / "scores.jsonl").read_text())
    assert [(obj["id"], obj["empty_input"]) for obj in record["objects"]] == [("lossy.jpg", False), ("red.png", False)]
    refined_red = np.asarray(Image.open(tmp_path / "out" / "photo" / "red.png"))
    assert refined_red.shape == red.shape and {tuple(c) for c in refined_red.reshape(-1, 3)} <= {(0, 0, 0), (255, 0, 0)}
    assert sorted(path.name for path in (tmp_path / "out" / "photo").iterdir()) == ["lossy.png", "red.png"]
