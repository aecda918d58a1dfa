"""Images and masks of every mode and depth: read as OpenCV reads them, or refused in one line.

The 16-bit defect first (a 16-bit grayscale PNG was read as all white: Pillow clips I;16 to
RGB), then property-based tests (Hypothesis) over modes, depths and file formats, with OpenCV's
`imread` as the independent reference for images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from io_fakes import IdentityRefiner, tree_digest
from samrefiner.errors import InputError
from samrefiner.io.images import read_image, read_mask_encoded
from samrefiner.io.masks import MaskFolders
from samrefiner.run.runner import run

SIZE = (6, 7)  # height, width


def opencv(path: Path) -> np.ndarray:
    """What OpenCV's imread gives (as RGB): the reference for 8-bit images."""
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def test_a_16_bit_grayscale_image_is_read_as_opencv_reads_it(tmp_path):
    """Before: every pixel of value >= 255 came back 255 (Pillow clips I;16 when converting)."""
    values = np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray(values).save(tmp_path / "deep.tif")
    for name in ("deep.png", "deep.tif"):
        pixels = read_image(tmp_path / name)
        np.testing.assert_array_equal(pixels, opencv(tmp_path / name))
        assert len(np.unique(pixels)) == 256


def test_a_dataset_of_16_bit_images_is_refined_on_the_scaled_pixels(tmp_path):
    (tmp_path / "images").mkdir()
    values = np.arange(SIZE[0] * SIZE[1], dtype=np.uint16).reshape(SIZE) * 1000
    Image.fromarray(values).save(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray((values > 20000).astype(np.uint8) * 255).save(tmp_path / "masks" / "a.png")
    seen = []

    class Recorder(IdentityRefiner):
        def refine(self, image, masks):
            seen.append(image)
            return super().refine(image, masks)

    summary = run(MaskFolders(tmp_path / "images", tmp_path / "masks", tmp_path / "out"), Recorder(), progress=False)
    assert summary.images == 1
    np.testing.assert_array_equal(seen[0], opencv(tmp_path / "images" / "a.png"))


def test_floating_point_and_out_of_range_32_bit_images_are_refused(tmp_path):
    Image.fromarray(np.zeros(SIZE, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(InputError, match=r"float\.tif: a floating-point image; save it with 8 or 16 bits"):
        read_image(tmp_path / "float.tif")
    Image.fromarray(np.full(SIZE, 70000, np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(InputError, match=r"wide\.tif: a 32-bit image with values 70000-70000, outside 16 bits"):
        read_image(tmp_path / "wide.tif")


# --- property-based ----------------------------------------------------------------------

KINDS = {  # (dtype, channels) -> file suffixes Pillow writes it to
    ("uint8", 1): (".png", ".tif", ".bmp", ".jpg", ".webp"),
    ("uint8", 3): (".png", ".tif", ".bmp", ".jpg", ".webp"),
    ("uint8", 4): (".png", ".tif", ".webp"),
    ("uint8", 2): (".png", ".tif"),
    ("uint16", 1): (".png", ".tif"),
    ("int32", 1): (".tif",),
    ("float32", 1): (".tif",),
    ("bool", 1): (".png", ".tif", ".bmp"),
}


@st.composite
def image_files(draw):
    (dtype, channels) = draw(st.sampled_from(sorted(KINDS)))
    suffix = draw(st.sampled_from(KINDS[(dtype, channels)]))
    shape = SIZE if channels == 1 else (*SIZE, channels)
    if dtype == "int32":
        elements = st.integers(-5, 70000)
    elif dtype == "float32":
        elements = st.floats(-1, 2, width=32)
    else:
        elements = None
    values = draw(arrays(np.dtype(dtype), shape, elements=elements))
    palette = dtype == "uint8" and channels == 1 and suffix in (".png", ".tif", ".bmp") and draw(st.booleans())
    return values, suffix, palette


def save(values: np.ndarray, suffix: str, palette: bool, folder: Path, stem: str = "x") -> Path:
    path = folder / f"{stem}{suffix}"
    image = Image.fromarray(values)
    if palette:
        image = image.convert("P")
        image.putpalette([(index * 37) % 256 for index in range(768)])
    image.save(path)
    return path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=image_files())
def test_any_image_is_read_as_8_bit_rgb_or_refused_in_one_line(tmp_path_factory, drawn):
    values, suffix, palette = drawn
    path = save(values, suffix, palette, tmp_path_factory.mktemp("image"))
    before = path.read_bytes()
    try:
        pixels = read_image(path)
    except InputError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        assert values.dtype.kind == "f" or values.min() < 0 or values.max() > 65535
        return
    assert pixels.dtype == np.uint8 and pixels.shape == (*SIZE, 3)
    if values.dtype == np.int32:  # OpenCV cannot read 32-bit TIFFs: the documented rule, 16-bit values' high byte
        np.testing.assert_array_equal(pixels, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2))
    elif values.dtype != bool and values.ndim == 2 and not palette:  # grayscale: OpenCV is the reference
        np.testing.assert_array_equal(pixels, opencv(path))
    assert path.read_bytes() == before


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=image_files())
def test_any_mask_file_is_one_object_or_refused_in_one_line(tmp_path_factory, drawn):
    values, suffix, palette = drawn
    path = save(values, suffix, palette, tmp_path_factory.mktemp("mask"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mask, _ = read_mask_encoded(path)
    except InputError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        return
    assert mask.dtype == bool and mask.shape == SIZE
    lossless = suffix in (".png", ".tif", ".bmp") and not palette
    if lossless and values.ndim == 2 and values.dtype != np.float32:
        np.testing.assert_array_equal(mask, values != 0)  # one object value: its pixels


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=image_files(), masks=st.lists(image_files(), min_size=1, max_size=3))
def test_a_dataset_of_any_modes_refines_or_lists_the_image_as_failed(tmp_path_factory, image, masks):
    root = tmp_path_factory.mktemp("dataset")
    (root / "images").mkdir()
    (root / "masks" / "a").mkdir(parents=True)
    save(*image, root / "images", "a")
    for number, drawn in enumerate(masks):
        save(*drawn, root / "masks" / "a", str(number))
    before = tree_digest(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run(MaskFolders(root / "images", root / "masks", root / "out"), IdentityRefiner(), progress=False)
    assert summary.images + summary.failures == 1
    if summary.failures:
        (line,) = summary.errors_path.read_text().splitlines()
        assert line.startswith(str(root)) and "Error:" not in line, line
    else:
        scores = json.loads((root / "out" / "scores.jsonl").read_text())
        assert len(scores["objects"]) == len(masks)
    after = tree_digest(root)
    assert {key: after[key] for key in before} == before
