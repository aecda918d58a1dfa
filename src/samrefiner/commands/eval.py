"""`samrefiner eval`: score predicted masks against ground truth (SPEC.md section 7).

    samrefiner eval --gt PATH --pred PATH [--format masks|label-maps|coco|yolo] [--json FILE] [--void V]

The layouts, their pairing and scores, and how `--format` is detected from `--gt` are those of
`samrefiner.evaluation.evaluate`. Void (`--void`): ground-truth pixels of the void value are left
out of every score; by default 128 in masks whose values are exactly {0, 128, 255} (GrabCut), 255
in label maps.

Missing or unusable predictions are scored as empty and listed (exit code 1 when any prediction
file was unusable). A `--pred` folder that holds none of the ground truth's files, and unusable
ground truth, stop the run with one error line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from samrefiner.commands.app import app
from samrefiner.commands.options import void_option
from samrefiner.errors import InputError
from samrefiner.evaluation.evaluate import (
    EvalReport,
    Format,
    evaluate,
    is_eval_json,
    write_json,
)
from samrefiner.evaluation.groundtruth import AUTO, VoidError
from samrefiner.io.formats import FormatUnclear, detect_format
from samrefiner.run.outputs import Location, check_locations

LISTED_PROBLEMS = 10


@app.command("eval")
def eval_command(
    gt: Annotated[Path, typer.Option("--gt", help="Ground truth: a folder, or a COCO .json file.")],
    pred: Annotated[Path, typer.Option("--pred", help="Predictions in the same layout as --gt.")],
    format: Annotated[
        Format | None, typer.Option("--format", help="Layout of both; detected from --gt when omitted.")
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write the scores to this JSON file.")] = None,
    void: Annotated[
        str,
        typer.Option(
            "--void",
            help="Ground-truth value left out of the scores: a value, none, or auto "
            "(128 in masks of exactly 0/128/255, e.g. GrabCut; 255 in label maps).",
        ),
    ] = AUTO,
) -> None:
    """Score predictions against ground truth: IoU, boundary IoU, mBA, mIoU or COCO (boundary) AP."""
    void_value = void_option(void)
    if json_file is not None:
        check_locations(
            [Location("--json", json_file, folder=False)],
            is_ours=lambda location: is_eval_json(location.path),
            remedy="choose another --json file (a scores file samrefiner eval wrote can be written again)",
        )
    try:
        report = evaluate(gt, pred, format or Format(detect_format(gt)), void_value)
    except FormatUnclear as error:
        raise InputError(f"{error}: give --format masks or --format label-maps") from None
    except VoidError as error:
        raise InputError(error.naming("--void")) from None
    print_report(report)
    if json_file is not None:
        write_json(json_file, report)
    if report.unusable:
        raise typer.Exit(1)


def print_report(report: EvalReport) -> None:
    """A table of the scores, then the missing and unusable predictions (the first few of each)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"samrefiner eval ({report.format.value})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.scores.items():
        table.add_row(key, str(value) if key == "count" else f"{value:.4f}")
    console.print(table)
    for label, problems in (
        ("missing (scored as empty)", report.missing),
        ("unusable (scored as empty)", report.unusable),
    ):
        if problems:
            console.print(f"{len(problems)} predictions {label}:", highlight=False)
            for line in problems[:LISTED_PROBLEMS]:
                console.print(f"  {line}", highlight=False, markup=False)
            if len(problems) > LISTED_PROBLEMS:
                console.print(f"  ... and {len(problems) - LISTED_PROBLEMS} more", highlight=False)
