"""YOLO polygon writing: its share of a run's CPU time on fragmented masks, and its peak memory for
two parts of ~33k and ~40k outline vertices.

    PYTHONPATH=src python bench/yolo_writing.py [--model lite_medsam] [--images 3]

1. Share: coco_stuff images, one object per class with every part of the class (fragmented masks),
   written by supervision as a YOLO dataset, refined by `samrefiner refine --yolo` in this process;
   polygon writing's CPU time (`seconds` in polygons.json: thread CPU time of YoloDataset.write)
   over the run's CPU time (`time.process_time`).
2. Memory: `mask_ring` of a mask of two jagged parts (a checkerboard-edged band each), peak traced
   by tracemalloc (numpy's allocations included) and the vertex counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

DATA = Path(os.environ.get("SAMREFINER_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"


def fragmented_dataset(root: Path, count: int) -> None:
    import supervision as sv

    from samrefiner.io.labelmaps import read_label_map

    annotations = {}
    for stem in [str(index) for index in range(count)]:
        label_map, _ = read_label_map(DATA / "coco_stuff" / "pngs" / f"{stem}.png")
        classes = [int(c) for c in np.unique(label_map) if c not in (0, 255)]
        masks = np.stack([label_map == c for c in classes])
        annotations[str(DATA / "coco_stuff" / "imgs" / f"{stem}.jpg")] = sv.Detections(
            xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks, class_id=np.array(classes)
        )
    sv.DetectionDataset([str(c) for c in range(183)], list(annotations), annotations).as_yolo(
        str(root / "images"), str(root / "labels"), str(root / "data.yaml")
    )


def writing_share(model: str, count: int) -> None:
    from samrefiner.cli import main

    with tempfile.TemporaryDirectory() as work:
        source, out = Path(work) / "in", Path(work) / "out"
        fragmented_dataset(source, count)
        sys.argv = [
            "samrefiner",
            "refine",
            "--model",
            model,
            "--iterations",
            "1",
            "--no-use-points",
            "--yolo",
            str(source),
            "--out",
            str(out),
            "--no-progress",
        ]
        started = time.process_time()
        try:
            main()
        except SystemExit:
            pass
        total = time.process_time() - started
        report = json.loads((out / "polygons.json").read_text())
    print(
        f"writing: {report['seconds']:.2f} s CPU of {total:.2f} s CPU for the run = {report['seconds'] / total:.1%} "
        f"({report['objects']} objects, share_changed {report['share_changed']:.4f})"
    )


def jagged_band(mask: np.ndarray, top: int, length: int) -> None:
    """A band whose top edge alternates every pixel: an outline of ~2 vertices per column."""
    mask[top + 1 : top + 6, :length] = True
    mask[top, :length:2] = True


def memory_of_two_parts() -> None:
    from samrefiner.io.yolo_polygons import mask_ring

    mask = np.zeros((40, 40_100), bool)
    jagged_band(mask, 2, 33_000)
    jagged_band(mask, 20, 40_000)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    tracemalloc.start()
    ring = mask_ring(mask)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"two parts of {sorted(len(c) for c in contours)} vertices: peak {peak / 2**20:.1f} MiB "
        f"(ring of {len(ring)} vertices; an N x M distance matrix would be "
        f"{len(contours[0]) * len(contours[1]) * 16 / 2**30:.1f} GiB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite_medsam")
    parser.add_argument("--images", type=int, default=3)
    options = parser.parse_args()
    memory_of_two_parts()
    writing_share(options.model, options.images)
