"""Label-map PNGs: palette and grayscale maps read and written back unchanged, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from samrefiner.errors import InputError
from samrefiner.io.labelmaps import read_label_map, write_label_map

COCO_MAP = DATA / "coco_stuff" / "pngs" / "0.png"


def _voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved class ids), 256 RGB entries."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        for shift in range(7, -1, -1):
            red |= ((index >> 0) & 1) << shift
            green |= ((index >> 1) & 1) << shift
            blue |= ((index >> 2) & 1) << shift
            index >>= 3
        palette += [red, green, blue]
    return palette


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_palette_map_keeps_its_palette(tmp_path: Path) -> None:
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[2:9, 3:12] = 15
    labels[10:18, 14:28] = 7
    labels[0, :] = 255
    source = tmp_path / "voc.png"
    image = Image.fromarray(labels).convert("P")
    image.putpalette(_voc_palette())
    image.save(source)

    array, palette = read_label_map(source)
    assert array.dtype == np.uint8 and np.array_equal(array, labels)
    assert palette == _voc_palette()

    target = tmp_path / "out" / "voc.png"
    write_label_map(target, array, palette)
    written = Image.open(target)
    assert written.mode == "P"
    assert written.getpalette() == _voc_palette()
    assert np.array_equal(np.asarray(written), labels)
    assert _files(target.parent) == ["voc.png"]  # no temporary file left behind


def test_grayscale_coco_map_round_trips(tmp_path: Path) -> None:
    array, palette = read_label_map(COCO_MAP)
    assert palette is None
    assert array.shape == (375, 500) and array.dtype == np.uint8
    assert set(np.unique(array).tolist()) == {61, 62, 71, 100, 155, 171, 172, 255}

    target = tmp_path / "0.png"
    write_label_map(target, array, palette)
    assert Image.open(target).mode == "L"
    again, again_palette = read_label_map(target)
    assert again_palette is None and np.array_equal(again, array)


def test_sixteen_bit_map_round_trips(tmp_path: Path) -> None:
    labels = np.array([[0, 300], [1200, 255]], dtype=np.uint16)
    target = tmp_path / "wide.png"
    write_label_map(target, labels)
    array, palette = read_label_map(target)
    assert palette is None and array.dtype == np.uint16 and np.array_equal(array, labels)


def test_overwriting_replaces_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "map.png"
    write_label_map(target, np.full((4, 4), 3, dtype=np.uint8))
    write_label_map(target, np.full((4, 4), 9, dtype=np.uint8))
    assert np.array_equal(read_label_map(target)[0], np.full((4, 4), 9))
    assert _files(tmp_path) == ["map.png"]


def test_colour_image_is_rejected_naming_the_file(tmp_path: Path) -> None:
    source = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(source)
    with pytest.raises(InputError, match=r"rgb\.png: a label map must be a palette or grayscale"):
        read_label_map(source)


def test_unreadable_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    with pytest.raises(InputError, match=r"broken\.png: not a readable image"):
        read_label_map(broken)
    with pytest.raises(InputError, match=r"missing\.png: file not found"):
        read_label_map(tmp_path / "missing.png")


def test_writing_rejects_arrays_that_are_not_label_maps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D uint8 or uint16"):
        write_label_map(tmp_path / "x.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="palette label map must be uint8"):
        write_label_map(tmp_path / "y.png", np.zeros((4, 4), dtype=np.uint16), _voc_palette())
    assert _files(tmp_path) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through a private temp file; the result must still be readable by others."""
    import os
    import stat

    from samrefiner.io.images import write_png

    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "out.png"
    write_png(target, np.zeros((4, 4), dtype=np.uint8))
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
