"""The option vocabulary of the commands: the typed options they share, one option per
`RefinerConfig` field (`with_config_options`), and `build_refiner`, the model loading of every
command that refines.

Only this layer names flags: library errors say what is wrong, and these helpers put them in the
terms of the option that was given (`--void`, `--precision`, `--chunk-size`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from samrefiner.config import RefinerConfig
from samrefiner.errors import InputError
from samrefiner.evaluation.groundtruth import Void, VoidError, parse_void

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
    "chunk_size": "At most this many objects per decoder call "
    "(CPU: one, the fastest; CUDA: what half the free memory holds).",
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
    typer.Option(
        "--instance-maps", help="Maps of object ids (0 background, 255 void): <instance-maps>/<image stem>.png."
    ),
]
IgnoreExifOption = Annotated[
    bool,
    typer.Option("--ignore-exif", help="Read images and masks as stored, without applying their EXIF orientation."),
]
YoloOption = Annotated[
    Path | None,
    typer.Option("--yolo", help="Ultralytics YOLO segmentation dataset folder (data.yaml, images/, labels/)."),
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
    str,
    typer.Option("--precision", help="Model precision: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16."),
]
CompileOption = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the encoder and decoder (slow first images; for long GPU runs)."),
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
    from samrefiner.models.device import make_current
    from samrefiner.models.speed import PRECISIONS
    from samrefiner.run.distributed import Ranks, process_device

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


def void_option(text: str) -> Void:
    """--void: auto, none or a pixel value (InputError naming the option otherwise)."""
    try:
        return parse_void(text)
    except VoidError as error:
        raise InputError(error.naming("--void")) from None


def in_void_terms(error: Exception) -> str:
    """An error as the CLI user knows it: a void problem names --void."""
    return error.naming("--void") if isinstance(error, VoidError) else str(error)


def chosen_input(images: Path | None, *, copy_images: bool = False, **sources: Path | None) -> tuple[str, Path]:
    """The one dataset input given on the command line, as (format name, path); one line naming the
    options when not exactly one is given, or when it lacks what it needs."""
    given = [(name, path) for name, path in sources.items() if path is not None]
    if len(given) != 1:
        listed = ", ".join(_flag(name) for name in sources)
        raise InputError(f"give exactly one of {listed} (got {len(given)})")
    name, path = given[0]
    if copy_images and name != "yolo":
        raise InputError("--copy-images is for --yolo datasets")
    if images is None and name != "yolo":
        raise InputError(f"{_flag(name)} needs --images")
    return name.replace("_", "-"), path


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_apart(inputs: list[Path], outputs: list[tuple[str, Path]]) -> None:
    """InputError when an output (option, path) is an input, lies inside an input folder or contains
    an input; the message names the option to change."""
    for option, output in outputs:
        resolved_output = output.resolve()
        for source in inputs:
            resolved_source = source.resolve()
            if (
                resolved_output == resolved_source
                or resolved_source in resolved_output.parents
                or resolved_output in resolved_source.parents
            ):
                raise InputError(f"{output}: output would overlap the input {source}; choose another {option}")
