"""CLI subcommands; importing this package registers every one of them on `samrefiner.commands.app.app`."""

from samrefiner.commands import refine  # noqa: F401  (first: the main job)
from samrefiner.commands import eval  # noqa: F401
from samrefiner.commands import bench  # noqa: F401
from samrefiner.commands import corrupt  # noqa: F401
from samrefiner.commands import adapt  # noqa: F401
from samrefiner.commands import review  # noqa: F401
