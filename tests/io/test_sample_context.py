"""Each format's per-image context is its own typed value: asked for by name, refused by another format."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from samrefiner.io.images import write_png
from samrefiner.io.labelmaps import LabelMaps, write_label_map
from samrefiner.io.masks import MaskFolders


def test_mask_files_are_asked_of_the_dataset_and_a_writer_refuses_another_formats_sample(tmp_path):
    images, masks, maps = tmp_path / "images", tmp_path / "masks", tmp_path / "maps"
    write_png(images / "a.png", np.zeros((6, 6, 3), np.uint8))
    square = np.zeros((6, 6), np.uint8)
    square[1:4, 1:4] = 255
    write_png(masks / "a" / "1.png", square)
    write_png(masks / "a" / "0.png", square)
    write_label_map(maps / "a.png", (square > 0).astype(np.uint8) * 3)
    folders, label_maps = MaskFolders(images, masks, tmp_path / "o1"), LabelMaps(images, maps, tmp_path / "o2")
    sample = folders.load(folders.refs()[0])
    assert folders.object_files(sample) == [masks / "a" / "0.png", masks / "a" / "1.png"]
    assert label_maps.map_file(label_maps.refs()[0]) == maps / "a.png"
    region_sample = label_maps.load(label_maps.refs()[0])
    with pytest.raises(TypeError, match="LabelMapContext, not MaskFilesContext"):
        folders.write(region_sample, SimpleNamespace(masks=region_sample.masks))
    assert not (tmp_path / "o1").exists()
