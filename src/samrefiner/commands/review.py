"""`samrefiner review` and `samrefiner apply-review`: look through a refined dataset, overrule it.

    samrefiner review --images DIR --coarse INPUT --refined OUTPUT --out REPORT_DIR
    samrefiner apply-review --decisions FILE --images DIR --coarse INPUT --refined OUTPUT --out FINAL

INPUT and OUTPUT are the input and the output of `samrefiner refine` (mask folders, label-map
folders or COCO .json). The page and the decisions it exports carry the report's id;
`apply-review` refuses decisions exported from another report. Exit code 0 when every image was
handled, 1 when some were not (one line each on stderr), 2 on a usage or input error.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from samrefiner.commands.app import app
from samrefiner.io.images import announcing_writes
from samrefiner.review.page import DATA_DIR, PAGE_SIZE
from samrefiner.run.manifest import Journal, owns
from samrefiner.run.outputs import Location, check_locations

if TYPE_CHECKING:
    from samrefiner.review.datasets import ReadLog

ImagesOption = Annotated[Path, typer.Option("--images", help="Folder of images (as given to `refine`).")]
CoarseOption = Annotated[
    Path,
    typer.Option(
        "--coarse",
        help="The coarse input of `refine`: a mask, label-map or instance-map folder, a COCO .json or a YOLO folder.",
    ),
]
RefinedOption = Annotated[Path, typer.Option("--refined", help="The output of `refine` for that input.")]
ReviewFormat = Literal["auto", "masks", "label-maps", "coco", "instance-maps", "yolo"]
"""`auto` and the names of samrefiner.io.formats.FORMATS."""
FormatOption = Annotated[
    ReviewFormat,
    typer.Option(
        "--format", help="auto: a .json is COCO, a folder with data.yaml YOLO, other folders by their content."
    ),
]


@app.command("review")
def review_command(
    images: ImagesOption,
    coarse: CoarseOption,
    refined: RefinedOption,
    out: Annotated[Path, typer.Option("--out", help="Report folder: OUT/index.html opens from disk.")],
    kind: FormatOption = "auto",
    title: Annotated[str, typer.Option("--title", help="Page title (default: the refined path).")] = "",
    page_size: Annotated[int, typer.Option("--page-size", min=1, help="Objects per page.")] = PAGE_SIZE,
) -> None:
    """Write a static page showing every object's coarse and refined mask, worth-a-look first."""
    from samrefiner.commands.options import check_apart
    from samrefiner.review.datasets import ReadLog, open_pair, review_images
    from samrefiner.review.identity import report_id
    from samrefiner.review.report import build_report

    check_apart([images, coarse, refined], [("--out", out)])
    check_locations(
        [Location("--out", out, folder=True)],
        is_ours=lambda location: (location.path / DATA_DIR / "manifest.js").is_file(),
        remedy="choose another --out (a report folder of samrefiner review can be written again)",
    )
    pair = open_pair(images, coarse, refined, kind=kind)
    log = ReadLog()
    summaries = build_report(
        review_images(pair, log),
        out,
        source=str(refined.resolve()),
        title=title or str(refined),
        page_size=page_size,
        report_id=report_id(pair),
    )
    _report_problems(log)
    typer.echo(f"{len(summaries)} objects ({pair.kind}) -> {out / 'index.html'}")
    raise typer.Exit(1 if log.errors else 0)


@app.command("apply-review")
def apply_review_command(
    decisions: Annotated[Path, typer.Option("--decisions", help="JSON file exported by the review page.")],
    images: ImagesOption,
    coarse: CoarseOption,
    refined: RefinedOption,
    out: Annotated[Path, typer.Option("--out", help="Final dataset: a folder, or a .json file for COCO.")],
    kind: FormatOption = "auto",
    undecided_coarse: Annotated[
        bool,
        typer.Option(
            "--undecided-coarse", help="Objects without a decision keep their coarse mask (default: refined)."
        ),
    ] = False,
) -> None:
    """Write the final dataset in the input's format: refined where accepted, coarse where rejected."""
    from samrefiner.commands.options import check_apart
    from samrefiner.review.apply import apply_decisions
    from samrefiner.review.datasets import open_pair
    from samrefiner.review.decisions import check_report, read_decisions
    from samrefiner.review.identity import report_id

    choices = read_decisions(decisions, undecided_refined=not undecided_coarse)
    pair = open_pair(images, coarse, refined, out, kind)
    layout = pair.coarse.layout
    check_apart([images, coarse, refined, decisions], [("--out", path) for path in layout.written_paths()])
    check_locations(
        [Location("--out", out, folder=layout.work_dir.parent == layout.out)],
        is_ours=functools.partial(owns, layout),
        remedy="choose another --out (an earlier apply-review output can be written again)",
    )
    check_report(choices, decisions, report_id(pair))
    with announcing_writes(Journal(layout).add):  # what makes the output recognisable as samrefiner's
        summary = apply_decisions(pair, choices)
    _report_problems(summary.log)
    typer.echo(str(summary))
    raise typer.Exit(1 if summary.log.errors else 0)


def _report_problems(log: ReadLog) -> None:
    """One stderr line per unreadable image, and a count of images the refine run did not write."""
    for line in log.errors:
        typer.echo(line, err=True)
    if log.unrefined:
        typer.echo(f"{log.unrefined} images of the input have no refined version", err=True)
