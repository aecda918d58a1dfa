"""`samrefiner bench`: coarse vs refined masks and the prompt ablations of the paper's Table 1.

    samrefiner bench --model SPEC --images DIR --gt DIR (--coarse DIR | --seed S)
                     [--only all,box] [--limit N] [--device D] [--json FILE] [--no-progress]
                     [refinement options]

Ground truth and coarse masks use the `--masks` layout of `samrefiner refine`; with `--seed`
the coarse masks are the ones `samrefiner corrupt --seed S` would write. The refinement options
set everything but the prompts, which each row switches itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from samrefiner.commands.app import app
from samrefiner.commands.options import (
    DeviceOption,
    ModelOption,
    ProgressOption,
    build_refiner,
    config_fields,
    with_config_options,
)
from samrefiner.errors import InputError
from samrefiner.run.outputs import Location, check_locations

SETTING_NAMES = "point, box, mask, point+box, point+mask, box+mask, all"
# Each row sets the prompts itself; --seed is the corruption seed (the random point strategy keeps
# RefinerConfig's default seed).
NOT_OPTIONS = ("use_points", "use_box", "use_mask", "seed")


@app.command("bench")
@with_config_options([field for field in config_fields() if field.name not in NOT_OPTIONS])
def bench_command(
    images: Annotated[Path, typer.Option("--images", help="Folder of images.")],
    gt: Annotated[
        Path, typer.Option("--gt", help="Ground-truth masks (<gt>/<image stem>/*.png or <gt>/<image stem>.png).")
    ],
    coarse: Annotated[
        Path | None, typer.Option("--coarse", help="Coarse masks, same layout and names as --gt.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Make coarse masks from --gt as `samrefiner corrupt --seed` does.")
    ] = None,
    model: ModelOption = "vit_h",
    device: DeviceOption = "auto",
    only: Annotated[
        str | None, typer.Option("--only", help=f"Comma-separated prompt settings to run ({SETTING_NAMES}).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use at most N images.")] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the table to this JSON file (0-1 scale).")
    ] = None,
    progress: ProgressOption = True,
    config_values: dict[str, Any] | None = None,
) -> None:
    """Score coarse masks and SAMRefiner with each prompt combination: IoU, boundary IoU, mBA, time."""
    from samrefiner.evaluation.bench import PROMPT_SETTINGS, is_bench_json, labelled_images, run_bench, write_json

    settings = _chosen_settings(only, PROMPT_SETTINGS)
    if json_file is not None:
        check_locations(
            [Location("--json", json_file, folder=False)],
            is_ours=lambda location: is_bench_json(location.path),
            remedy="choose another --json file (a table samrefiner bench wrote can be written again)",
        )
    if (coarse is None) == (seed is None):
        raise InputError("give either coarse masks (--coarse DIR) or a seed to make them (--seed S)")
    data = labelled_images(images, gt, coarse=coarse, seed=seed, limit=limit)
    refiner = build_refiner(model, device, config_values or {})
    report = run_bench(refiner.model, data, refiner.config, settings, progress=progress)
    _print_table(report)
    if json_file is not None:
        write_json(json_file, report)
    if report.failures:
        raise typer.Exit(1)


def _chosen_settings(only: str | None, settings: dict[str, dict[str, bool]]) -> dict[str, dict[str, bool]]:
    if only is None:
        return settings
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in settings]
    if unknown or not names:
        raise InputError(
            f"--only {only}: unknown prompt setting {unknown[0] if unknown else '(none)'}; use {SETTING_NAMES}"
        )
    return {name: settings[name] for name in names}


def _print_table(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="samrefiner bench (IoU pooled over objects; scores in %)")
    for column in ("setting", "IoU", "boundary IoU", "mBA", "objects", "s / image"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in report.rows:
        summary = row.summary()
        seconds = summary["seconds_per_image"]
        table.add_row(
            row.name,
            *(_percent(summary[key]) for key in ("iou", "boundary_iou", "mba")),
            str(summary["count"]),
            "-" if seconds is None else f"{seconds:.2f}",
        )
    console = Console()
    console.print(table)
    console.print(f"image encoding: {report.encode_seconds_per_image:.2f} s / image (included in every row's time)")
    for failure in report.failures:
        console.print(f"skipped: {failure}", markup=False, highlight=False)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"
