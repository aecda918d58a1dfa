"""`samrefiner refine`: refine a whole dataset of coarse masks, in the input's own format.

    samrefiner refine --model SPEC (--images DIR (--masks DIR | --label-maps DIR | --coco FILE) | --yolo DIR)
                      --out PATH [refinement options] [--device D] [--save-overlays DIR]
                      [--limit N] [--shard K/N] [--resume | --overwrite] [--errors FILE] [--precision P] [--compile]
                      [--max-consecutive-failures N]
    torchrun --nproc-per-node G -m samrefiner refine ...   (one process per GPU, one merged output)
    samrefiner refine ... --instance-maps DIR ...          (one map of object ids per image; --ignore-exif: files as stored)

Every `RefinerConfig` field is an option (`--iterations 3`, `--no-use-box`, ...), generated from
the dataclass so the two never drift apart. The output never goes over or inside the input, and
never mixes two runs (samrefiner.run.manifest). Exit code: 0 when every image was refined, 1 when some
failed (listed in the errors file), 2 on a usage or input error (one line on stderr), 3 when the
failure policy stopped the run (samrefiner.run.failures; finished work kept, `--resume` continues),
130 when interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from samrefiner.cli import app
from samrefiner.config import RefinerConfig
from samrefiner.errors import InputError
from samrefiner.io.datasets import check_apart, open_dataset
from samrefiner.run.manifest import (
    RunConflict,
    claim,
    file_fields,
    model_fields,
    new_manifest,
    owns,
    settings_fields,
)
from samrefiner.run.outputs import Location, check_locations
from samrefiner.run.runner import RunOptions
from samrefiner.run.shards import Shard, shard_path
from samrefiner.run.summary import Summary

CONFIG_PANEL = "Refinement (RefinerConfig)"
CONFIG_HELP = {
    "use_points": "Prompt with the positive point (distance-guided).",
    "use_negative_point": "Add the negative point.",
    "use_box": "Prompt with the (elastic) box.",
    "use_mask": "Prompt with the Gaussian-style mask.",
    "box_expand_threshold": "Elastic box lambda; 0 disables it, the paper uses 0.1 for instance masks.",
    "box_expand_passes": "Progressive passes of the elastic box.",
    "gamma": "Span of the mask prompt.",
    "strength": "Amplitude of the mask prompt (omega).",
    "iterations": "Cascade iterations (refined masks prompt the next pass).",
    "point_strategy": "Positive point: distance, box_center or random (drawn with --seed).",
    "seed": "Seed of the random point strategy.",
    "chunk_size": "At most this many objects per decoder call (CPU: one, the fastest; CUDA: what half the free memory holds).",
}


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: type
    default: Any


def config_fields() -> list[ConfigField]:
    """The RefinerConfig fields (a torch-free dataclass), their annotations resolved to types."""
    hints = typing.get_type_hints(RefinerConfig)
    return [ConfigField(field.name, hints[field.name], field.default) for field in dataclasses.fields(RefinerConfig)]


def with_config_options(fields: list[ConfigField], panel: str = CONFIG_PANEL) -> Callable[[Callable], Callable]:
    """Add one `--field-name` option per config field to a command; it gets them as `config_values`."""

    def decorate(command: Callable) -> Callable:
        own = [
            parameter
            for name, parameter in inspect.signature(command, eval_str=True).parameters.items()
            if name != "config_values"
        ]
        added = [
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=field.default,
                annotation=Annotated[
                    field.type,
                    typer.Option(
                        _option_name(field),
                        help=CONFIG_HELP.get(field.name, f"RefinerConfig.{field.name}"),
                        rich_help_panel=panel,
                    ),
                ],
            )
            for field in fields
        ]

        @functools.wraps(command, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
        def wrapper(**kwargs: Any) -> Any:
            values = {field.name: kwargs.pop(field.name) for field in fields}
            return command(config_values=values, **kwargs)

        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in own + added}
        return wrapper

    return decorate


# The input and model options, for every command that reads a refine dataset or loads a model.
ImagesOption = Annotated[Path, typer.Option("--images", help="Folder of images (searched recursively).")]
MasksOption = Annotated[
    Path | None,
    typer.Option("--masks", help="Per-object mask PNGs: <masks>/<image stem>/*.png or <masks>/<image stem>.png."),
]
LabelMapsOption = Annotated[
    Path | None, typer.Option("--label-maps", help="Semantic label-map PNGs: <label-maps>/<image stem>.png.")
]
CocoOption = Annotated[Path | None, typer.Option("--coco", help="COCO instance JSON (ground truth or a results list).")]
InstanceMapsOption = Annotated[
    Path | None,
    typer.Option("--instance-maps", help="Maps of object ids (0 background, 255 void): <instance-maps>/<image stem>.png."),
]
IgnoreExifOption = Annotated[
    bool, typer.Option("--ignore-exif", help="Read images and masks as stored, without applying their EXIF orientation.")
]
YoloOption = Annotated[
    Path | None, typer.Option("--yolo", help="Ultralytics YOLO segmentation dataset folder (data.yaml, images/, labels/).")
]
ModelOption = Annotated[
    str, typer.Option("--model", help="Checkpoint file, transformers folder, model name or Hugging Face id.")
]


def checked_device(value: str) -> str:
    """--device: "auto", or a device this machine has, for this process under torchrun too (DeviceError,
    one line, before any work starts)."""
    from samrefiner.run.distributed import Ranks, process_device

    process_device(value, Ranks.from_env(), name="--device")
    return value


DeviceOption = Annotated[
    str, typer.Option("--device", callback=checked_device, help="cpu, cuda, cuda:1, ...; auto: cuda when present.")
]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help="Model precision: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16.")
]
CompileOption = Annotated[
    bool, typer.Option("--compile", help="torch.compile the encoder and decoder (slow first images; for long GPU runs).")
]


def _option_name(field: ConfigField) -> str:
    name = field.name.replace("_", "-")
    return f"--{name}/--no-{name}" if field.type is bool else f"--{name}"


def in_option_terms(message: str) -> str:
    """A RefinerConfig message as the CLI user knows it: `chunk_size` -> `--chunk-size`, True -> on."""
    names = "|".join(field.name for field in config_fields())
    message = re.sub(rf"\b({names})\b", lambda match: "--" + match.group(1).replace("_", "-"), message)
    return message.replace("must be True", "must be on")


RefineImagesOption = Annotated[
    Path | None, typer.Option("--images", help="Folder of images (searched recursively); with --yolo: the YOLO folder.")
]
OutOption = Annotated[Path, typer.Option("--out", help="Output folder (masks, label maps) or .json file (COCO).")]
CopyImagesOption = Annotated[
    bool, typer.Option("--copy-images", help="--yolo: also copy the images into the output dataset.")
]
CocoSegmentationOption = Annotated[
    str,
    typer.Option(
        "--coco-segmentation", help="--coco output: rle, polygons, or input (each annotation in its input kind)."
    ),
]
OverlaysOption = Annotated[
    Path | None, typer.Option("--save-overlays", help="Also write coarse | refined overlays here, one PNG per image.")
]
LimitOption = Annotated[
    int | None,
    typer.Option(
        "--limit", min=1, help="Refine the first N images of the --shard selection (torchrun ranks share them)."
    ),
]
ShardOption = Annotated[
    str, typer.Option("--shard", help="K/N: only every N-th image from the K-th (0-based), e.g. a SLURM array task.")
]
ResumeOption = Annotated[
    bool,
    typer.Option("--resume", help="Skip images an earlier run finished (redone when their input files changed)."),
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace another run's results in --out (removes exactly its files); write into a folder or over a file "
        "samrefiner did not write (its other files are never removed).",
    ),
]
ErrorsOption = Annotated[
    Path | None,
    typer.Option(
        "--errors",
        help="Where to list failed images (default: beside the output); with --shard K/N: NAME.shard-K-of-N.EXT.",
    ),
]
MaxFailuresOption = Annotated[
    int,
    typer.Option(
        "--max-consecutive-failures",
        min=1,
        help="Stop (exit 3) when the same error, not a bad input, fails N images in a row.",
    ),
]
AdapterOption = Annotated[
    Path | None, typer.Option("--adapter", help="SAMRefiner++ IoU adapter (.safetensors from `samrefiner adapt`).")
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        min=0,
        help="Processes that read and write images beside the model, and two images in flight (0: a thread reads).",
    ),
]
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
        dataset = open_dataset(images, out, **sources, copy_images=copy_images, ignore_exif=ignore_exif)
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
    given = [path for path in (options.errors_path, options.overlays) if path is not None]
    check_apart(inputs, [*dataset.layout.written_paths(), *given])
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


def identity_fields(
    sources: dict[str, Path | None], options: RunOptions, config_values: dict[str, Any], **settings: Any
) -> dict[str, Any]:
    """What decides the output besides the model (samrefiner.run.manifest), checked against an earlier
    run in --out before the model loads: the inputs (paths, and digests of the files that are one
    input of the whole run), the dataset settings, the selection and the refinement settings."""
    yolo = sources.get("yolo")
    return {
        **sources,
        **settings,
        "limit": options.limit,
        "shards": options.shard.count,
        **settings_fields(config_values),
        **file_fields(coco=sources.get("coco"), yolo_data_yaml=yolo / "data.yaml" if yolo else None),
    }


def refine_dataset(dataset: Any, refiner: Any, ranks: Any, options: RunOptions, workers: int) -> Summary:
    """Claim the output and run (every rank), reading and writing in `workers` processes or a thread."""
    from samrefiner.run.distributed import run_ranks
    from samrefiner.run.loader import Workers, load_in_background
    from samrefiner.run.overlap import refine_overlapped
    from samrefiner.run.runner import refine_in_order
    from samrefiner.run.writes import InlineWrites
    from samrefiner.timing import StageTimes, idle_shares, recording

    pool = Workers(dataset, workers) if workers else None
    if pool:
        options = replace(options, loader=pool.loader, writer=pool.writer, refining=refine_overlapped)
    else:
        options = replace(options, loader=load_in_background, writer=InlineWrites, refining=refine_in_order)
    times = StageTimes(stage_synchronizer(refiner))
    start = time.perf_counter()
    try:
        with recording(times):
            summary = run_ranks(dataset, refiner, ranks, options)
    finally:
        if pool:
            pool.close()
    summary.idle = idle_shares(times, time.perf_counter() - start)  # this process's (rank 0's under torchrun)
    return summary


def report(summary: Summary, dataset: Any, ranks: Any) -> None:
    """Print the summary (rank 0) and exit: 0 all refined, 1 some failed, 3 stopped by the failure policy."""
    if ranks.rank > 0:
        raise typer.Exit(3 if summary.stopped else 0)  # rank 0 reports the whole run
    typer.echo(str(summary))
    if getattr(dataset, "report_line", ""):
        typer.echo(dataset.report_line)
    if summary.stopped:
        typer.echo(f"samrefiner: error: run stopped: {summary.stopped}; finished work kept, --resume continues", err=True)
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


def stage_synchronizer(refiner: Any) -> Callable[[], None] | None:
    """torch.cuda.synchronize of the model's GPU when it runs on CUDA (model stages then time its work)."""
    from samrefiner.models.device import cuda_device, synchronizer

    return synchronizer(cuda_device(refiner.model))


def build_refiner(
    model_spec: str,
    device: str,
    config_values: dict[str, Any],
    adapter: Path | None = None,
    precision: str = "auto",
    compile_model: bool = False,
    ranks: Any = None,
) -> Any:
    """Check the refinement options, then load the model on `device` (this rank's GPU under torchrun)
    with its speed settings and wrap it in a Refiner (with the IoU adapter file `adapter`, if any)."""
    from samrefiner import Refiner, load_model
    from samrefiner.run.distributed import Ranks, process_device
    from samrefiner.models.device import make_current
    from samrefiner.models.speed import PRECISIONS

    try:
        config = RefinerConfig(**config_values)
    except ValueError as error:
        raise InputError(f"refinement options: {in_option_terms(str(error))}") from None
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    resolved = process_device(device, ranks or Ranks(), name="--device")
    make_current(resolved)
    loaded = load_model(model_spec, device=resolved)
    loaded.speed_up(precision, compile=compile_model)
    return Refiner(loaded, config, adapter=adapter)
