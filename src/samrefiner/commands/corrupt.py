"""`samrefiner corrupt`: flawed masks from ground truth, DAVIS-585 style, for benchmarking refiners.

Ground truth is read like `samrefiner refine --masks`: `<gt>/<key>/<object>.png` (one folder per
image) or `<gt>/<key>.png` (one object per image, e.g. GrabCut or DAVIS `Annotations/<seq>/<frame>.png`),
paired with the image `<images>/<key>.<ext>`; or a YOLO segmentation dataset (a `--gt` folder with
data.yaml; `--images` the folder holding its images, usually the same), written as a YOLO
dataset under `--out`. Void pixels follow `--void` as in `samrefiner eval` (by default GrabCut's
128 "uncertain" band in masks of exactly 0/128/255; YOLO polygons have none): the object is the
certain one and IoUs leave void out. The flawed masks mirror that layout under `--out` (same
relative paths, same foreground value, binary), with `corrupt.json` recording, per object, the
IoU reached, the superpixel count and the number of defects.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from samrefiner.commands.app import app
from samrefiner.commands.options import check_apart, in_void_terms, void_option
from samrefiner.errors import SamRefinerError
from samrefiner.evaluation.groundtruth import AUTO, sample_truths
from samrefiner.io.images import atomic_write
from samrefiner.run.outputs import Location, check_locations

if TYPE_CHECKING:
    from samrefiner.evaluation.corrupt import Corruption

REPORT_NAME = "corrupt.json"


@app.command("corrupt")
def corrupt_command(
    images: Annotated[Path, typer.Option("--images", help="Folder of images.")],
    gt: Annotated[Path, typer.Option("--gt", help="Ground-truth masks: per-image folders or one PNG per image.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the flawed masks (apart from --gt and --images).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
    void: Annotated[
        str,
        typer.Option(
            "--void", help="Ground-truth value left out of IoUs: a value, none, or auto (128 in 0/128/255 masks)."
        ),
    ] = AUTO,
) -> None:
    """Make flawed masks (IoU 0.75-0.85 with the ground truth) from superpixel defects."""
    from samrefiner.evaluation.corrupt import IOU_BAND, corrupt_sample
    from samrefiner.io.formats import open_dataset

    void_value = void_option(void)
    check_apart([gt, images], [("--out", out)])
    check_locations(
        [Location("--out", out, folder=True)],
        is_ours=lambda location: (location.path / REPORT_NAME).is_file(),
        remedy=f"choose another --out (a folder samrefiner corrupt wrote holds {REPORT_NAME})",
    )
    dataset = open_dataset("yolo" if (gt / "data.yaml").is_file() else "masks", gt, images, out)
    written = {}
    started = time.perf_counter()
    objects: dict[str, dict] = {}
    failures: list[str] = []
    for ref in dataset.refs():
        try:
            sample = dataset.load(ref)
            truths = sample_truths(dataset, sample, void_value)
        except SamRefinerError as error:
            failures.append(in_void_terms(error))
            print(f"samrefiner: skipped: {failures[-1]}", file=sys.stderr)
            continue
        corruptions = corrupt_sample(sample, seed, truths)
        written[ref.key] = dataset.write(sample, SimpleNamespace(masks=np.stack([c.mask for c in corruptions])))
        for item, corruption in zip(sample.objects, corruptions):
            objects[f"{ref.key}/{item['id']}"] = _record(corruption)
    dataset.finalize(written)
    _write_report(out / REPORT_NAME, seed, IOU_BAND, objects, failures)
    _print_summary(objects, failures, time.perf_counter() - started, IOU_BAND)
    if failures:
        raise typer.Exit(1)


def _record(corruption: Corruption) -> dict:
    return {
        "iou": round(corruption.iou, 6),
        "in_band": corruption.in_band,
        "superpixels": corruption.segments,
        "defects": corruption.defects,
    }


def _write_report(
    path: Path, seed: int, band: tuple[float, float], objects: dict[str, dict], failures: list[str]
) -> None:
    document = {"seed": seed, "iou_band": list(band), "objects": objects, "failures": failures}
    text = json.dumps(document, indent=1) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _print_summary(objects: dict[str, dict], failures: list[str], seconds: float, band: tuple[float, float]) -> None:
    outside = {name: record for name, record in objects.items() if not record["in_band"]}
    ious = [record["iou"] for record in objects.values()]
    spread = f", IoU {min(ious):.3f}-{max(ious):.3f}" if ious else ""
    print(f"{len(objects)} flawed masks{spread}, {len(failures)} images failed, {seconds:.1f} s")
    for name, record in outside.items():
        print(f"  {name}: IoU {record['iou']:.3f} is the closest reachable (outside {band[0]}-{band[1]})")
