"""The `samrefiner` command: a thin layer over the Python API.

Each subcommand lives in `samrefiner.commands.<name>` and registers itself on `app` when imported;
heavy imports (torch, transformers) happen inside the command bodies so that `--help` is instant.
"""

from __future__ import annotations

import sys

import typer

from samrefiner.errors import SamRefinerError

app = typer.Typer(
    name="samrefiner",
    help="Refine coarse segmentation masks with the Segment Anything Model (SAMRefiner).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Entry point: a SamRefinerError becomes one line on stderr and exit code 2."""
    _register_commands()
    try:
        app()
    except SamRefinerError as error:
        print(f"samrefiner: error: {error}", file=sys.stderr)
        sys.exit(2)


def _register_commands() -> None:
    import samrefiner.commands  # noqa: F401  (each module adds its subcommand to `app`)
