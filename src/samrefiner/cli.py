"""The `samrefiner` command's entry point (`samrefiner.commands` holds the app and its subcommands).

A SamRefinerError from any command is one line on stderr, `samrefiner: error: <what>: <cause>`,
with exit code 2.
"""

from __future__ import annotations

import sys

import samrefiner.commands  # noqa: F401  (registers every subcommand on `app`)
from samrefiner.commands.app import ERROR_PREFIX, app
from samrefiner.errors import SamRefinerError

__all__ = ["app", "main"]


def main(args: list[str] | None = None) -> None:
    """Run the command line: a SamRefinerError becomes one line on stderr and exit code 2."""
    try:
        app(args, prog_name="samrefiner")
    except SamRefinerError as error:
        print(ERROR_PREFIX + " ".join(str(error).splitlines()), file=sys.stderr)
        sys.exit(2)
