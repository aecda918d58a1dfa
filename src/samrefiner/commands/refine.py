"""`samrefiner refine`: refine a whole dataset of coarse masks, in the input's own format.

    samrefiner refine --model SPEC --out PATH
                      (--images DIR (--masks DIR | --label-maps DIR | --instance-maps DIR | --coco FILE)
                       | --yolo DIR [--images DIR] [--copy-images])
                      [refinement options] [--adapter FILE] [--device D] [--precision P] [--compile]
                      [--workers N] [--save-overlays DIR] [--coco-segmentation rle|polygons|input]
                      [--limit N] [--shard K/N] [--resume | --overwrite] [--errors FILE]
                      [--max-consecutive-failures N] [--ignore-exif] [--no-progress]
    torchrun --nproc-per-node G -m samrefiner refine ...   (one process per GPU, one merged output)

Every `RefinerConfig` field is an option (`--iterations 3`, `--no-use-box`, ...), generated from
the dataclass so the two never drift apart. The output never goes over or inside the input, and
never mixes two runs (samrefiner.run.manifest). Exit code: 0 when every image was refined, 1 when some
failed (listed in the errors file), 2 on a usage or input error (one line on stderr), 3 when the
failure policy stopped the run (samrefiner.run.failures; finished work kept, `--resume` continues),
130 when interrupted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from samrefiner.commands.app import app
from samrefiner.commands.options import (
    AdapterOption,
    CocoOption,
    CocoSegmentationOption,
    CompileOption,
    CopyImagesOption,
    DeviceOption,
    ErrorsOption,
    IgnoreExifOption,
    InstanceMapsOption,
    LabelMapsOption,
    LimitOption,
    MasksOption,
    MaxFailuresOption,
    ModelOption,
    OutOption,
    OverlaysOption,
    OverwriteOption,
    PrecisionOption,
    ProgressOption,
    RefineImagesOption,
    ResumeOption,
    ShardOption,
    WorkersOption,
    YoloOption,
    build_refiner,
    check_apart,
    chosen_input,
    config_fields,
    with_config_options,
)
from samrefiner.errors import InputError
from samrefiner.io.formats import open_dataset
from samrefiner.run.dataset_run import identity_fields, refine_dataset
from samrefiner.run.manifest import RunConflict, claim, model_fields, new_manifest, owns
from samrefiner.run.outputs import Location, check_locations
from samrefiner.run.runner import RunOptions
from samrefiner.run.shards import Shard, shard_path
from samrefiner.run.summary import Summary

FOREIGN_REMEDY = (
    "choose another path, or give --overwrite to write there anyway (samrefiner never removes files it did not write)"
)


@app.command("refine")
@with_config_options(config_fields())
def refine_command(
    *,
    images: RefineImagesOption = None,
    out: OutOption,
    masks: MasksOption = None,
    label_maps: LabelMapsOption = None,
    coco: CocoOption = None,
    instance_maps: InstanceMapsOption = None,
    ignore_exif: IgnoreExifOption = False,
    yolo: YoloOption = None,
    copy_images: CopyImagesOption = False,
    coco_segmentation: CocoSegmentationOption = "input",
    model: ModelOption = "vit_h",
    device: DeviceOption = "auto",
    save_overlays: OverlaysOption = None,
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    resume: ResumeOption = False,
    overwrite: OverwriteOption = False,
    errors: ErrorsOption = None,
    max_consecutive_failures: MaxFailuresOption = 5,
    progress: ProgressOption = True,
    adapter: AdapterOption = None,
    precision: PrecisionOption = "auto",
    compile_model: CompileOption = False,
    workers: WorkersOption = 0,
    config_values: dict[str, Any] | None = None,
) -> None:
    """Refine every image's coarse masks with SAM and write them in the input's format.

    Under torchrun each process refines its share of the images and rank 0 merges them into one
    output, the same as a single process leaves (see samrefiner.run.distributed)."""
    from samrefiner.run.distributed import Ranks

    with in_cli_terms():
        if resume and overwrite:
            raise InputError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
        sources = {"masks": masks, "label_maps": label_maps, "coco": coco, "instance_maps": instance_maps, "yolo": yolo}
        kind, source = chosen_input(images, copy_images=copy_images, **sources)
        dataset = open_dataset(kind, source, images, out, copy_images=copy_images, ignore_exif=ignore_exif)
        set_coco_segmentation(dataset, coco_segmentation)
        options = RunOptions(
            shard=parse_shard(shard), limit=limit, resume=resume, errors_path=errors, overlays=save_overlays,
            progress=progress, overwrite=overwrite, max_consecutive_failures=max_consecutive_failures,
        )  # fmt: skip
        inputs = [path for path in (images or yolo, *sources.values(), adapter) if path is not None]
        check_paths(dataset, inputs, options)
        fields = identity_fields(
            {"images": images, **sources}, options, config_values or {},
            ignore_exif=ignore_exif, coco_segmentation=coco_segmentation, copy_images=copy_images,
        )  # fmt: skip
        claim(dataset.layout, new_manifest(**fields), resume=resume, overwrite=overwrite, partial=True)
        ranks = Ranks.from_env()
        refiner = build_refiner(model, device, config_values or {}, adapter, precision, compile_model, ranks)
        manifest = new_manifest(**fields, **model_fields(refiner, model, adapter))
        summary = refine_dataset(dataset, refiner, ranks, replace(options, manifest=manifest), workers)
    report(summary, dataset, ranks)


CONFLICT_REMEDIES = {  # what resolves a refused output claim (samrefiner.run.manifest.RunConflict.kind)
    "resume": "--resume continues only the same run: give that run's options (--shard and --limit included), "
    "or --overwrite to start over",
    "overwrite": "--overwrite replaces them, or choose another --out",
    "unusable": "delete that output or choose another --out",
}


@contextmanager
def in_cli_terms() -> Iterator[None]:
    """Ctrl-C at any point as one line (rank 0 under torchrun) and exit 130; a refused output claim
    with the options that resolve it."""
    from samrefiner.run.distributed import Ranks

    try:
        yield
    except KeyboardInterrupt:
        if Ranks.from_env().rank == 0:
            typer.echo("samrefiner: interrupted; run the same command with --resume to continue", err=True)
        raise typer.Exit(130) from None
    except RunConflict as error:
        raise InputError(f"{error}; {CONFLICT_REMEDIES[error.kind]}") from None


def parse_shard(text: str) -> Shard:
    """--shard K/N (InputError naming the option when malformed)."""
    try:
        return Shard.parse(text)
    except InputError as error:
        raise InputError(f"--shard {error}") from None


def check_paths(dataset: Any, inputs: list[Path], options: RunOptions) -> None:
    """Before the model loads: something to refine, outputs apart from the inputs and from each
    other, each writable and either new, samrefiner's own, or allowed by --overwrite."""
    if not dataset.refs():
        raise InputError(f"{inputs[1]}: no coarse masks to refine")
    outputs = [("--out", path) for path in dataset.layout.written_paths()]
    outputs += [("--errors", options.errors_path), ("--save-overlays", options.overlays)]
    check_apart(inputs, [(option, path) for option, path in outputs if path is not None])
    check_locations(
        output_locations(dataset.layout, options),
        is_ours=functools.partial(owns, dataset.layout),
        foreign_allowed=options.overwrite,
        remedy=FOREIGN_REMEDY,
    )


def output_locations(layout: Any, options: RunOptions) -> list[Location]:
    """Where a refine run writes: --out (for a .json output also its work folder, scores and errors
    files beside it), --errors, --save-overlays."""
    is_folder = layout.work_dir.parent == layout.out
    locations = [Location("--out", layout.out, folder=is_folder)]
    if not is_folder:
        locations += [Location("", layout.work_dir, folder=True), Location("", layout.scores_path, folder=False)]
    if options.errors_path is not None or not is_folder:
        errors = shard_path(options.errors_path or layout.errors_path, options.shard)
        locations.append(Location("--errors" if options.errors_path else "", errors, folder=False))
    if options.overlays is not None:
        locations.append(Location("--save-overlays", options.overlays, folder=True))
    return locations


def report(summary: Summary, dataset: Any, ranks: Any) -> None:
    """Print the summary (rank 0) and exit: 0 all refined, 1 some failed, 3 stopped by the failure policy."""
    if ranks.rank > 0:
        raise typer.Exit(3 if summary.stopped else 0)  # rank 0 reports the whole run
    typer.echo(str(summary))
    if getattr(dataset, "report_line", ""):
        typer.echo(dataset.report_line)
    if summary.stopped:
        typer.echo(
            f"samrefiner: error: run stopped: {summary.stopped}; finished work kept, --resume continues", err=True
        )
        raise typer.Exit(3)
    raise typer.Exit(1 if summary.failures else 0)


def set_coco_segmentation(dataset: Any, kind: str) -> None:
    """--coco-segmentation: how a COCO dataset writes refined masks (InputError when unknown)."""
    from samrefiner.io.coco import SEGMENTATION_KINDS, CocoDataset

    if kind not in SEGMENTATION_KINDS:
        raise InputError(f"--coco-segmentation {kind}: choose one of {', '.join(SEGMENTATION_KINDS)}")
    if isinstance(dataset, CocoDataset):
        dataset.segmentation_kind = kind
    elif kind != "input":
        raise InputError(f"--coco-segmentation {kind} is for --coco datasets")
