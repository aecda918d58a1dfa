"""CLI subcommands; importing this package registers every one of them on `samrefiner.commands.app.app`."""

from samrefiner.commands import (
    adapt,  # noqa: F401
    bench,  # noqa: F401
    corrupt,  # noqa: F401
    eval,  # noqa: F401
    refine,  # noqa: F401  (first: the main job)
    review,  # noqa: F401
)
