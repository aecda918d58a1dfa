"""Output locations: a place a command writes is the tool's alone, checked before any work starts.

Every command that writes names its outputs as `Location`s (a file or a folder, with the name the
caller uses for it in messages) and calls `check_locations` before it loads a model or reads a
dataset. That refuses, with one line (InputError):

- two outputs that are the same path, or one inside the other (e.g. overlays into the mask folder);
- an output that cannot be written: a path under a regular file, a file where a folder is meant (or
  the reverse), a folder without write permission;
- an output that exists and was not written by samrefiner: a file the caller's `is_ours` does not
  recognise (a run manifest beside it, a report's own marker, ...), or a non-empty folder it does
  not recognise. An empty or missing folder is always fine. `foreign_allowed` (an option the user
  typed) lets the command write into such a folder or over such a file anyway.

The caller words the remedy (`remedy`, appended to a refusal); this module names no options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from samrefiner.errors import InputError


@dataclass(frozen=True)
class Location:
    """One place a command writes: `path`, a folder (`folder`) or a single file, called `name`."""

    name: str
    path: Path
    folder: bool

    @property
    def absolute(self) -> Path:
        return Path(os.path.abspath(self.path)).resolve()

    def __str__(self) -> str:
        return f"{self.name} {self.path}" if self.name else str(self.path)


def check_locations(
    locations: Iterable[Location],
    *,
    is_ours: Callable[[Location], bool],
    foreign_allowed: bool = False,
    remedy: str = "delete it or choose another location",
) -> None:
    """InputError (one line) unless every location is apart from the others, writable, and either
    absent, an empty folder, or recognised by `is_ours` (any, with `foreign_allowed`)."""
    chosen = list(locations)
    check_apart_outputs(chosen)
    for location in chosen:
        check_writable(location)
        if not foreign_allowed and holds_foreign(location) and not is_ours(location):
            what = "a folder that holds files" if location.folder else "a file"
            raise InputError(f"{location}: {what} samrefiner did not write; {remedy}")


def check_apart_outputs(locations: list[Location]) -> None:
    """InputError when two outputs are the same path or one lies inside the other (a folder)."""
    for first, second in combinations(locations, 2):
        a, b = first.absolute, second.absolute
        if a == b:
            raise InputError(f"{first} and {second} are the same path: give each output its own place")
        for outer, inner in ((first, second), (second, first)):
            if outer.absolute in inner.absolute.parents:
                raise InputError(f"{inner} lies inside {outer}: give each output its own place")


def check_writable(location: Location) -> None:
    """InputError when `location` cannot be written: a path under a regular file, a file where a
    folder is meant (or the reverse), a folder this process may not write into."""
    path = Path(os.path.abspath(location.path))
    if path.exists():
        if location.folder != path.is_dir():
            kind = "a folder" if path.is_dir() else "a file"
            raise InputError(f"{location}: is {kind}, not {'a folder' if location.folder else 'a file'}")
        folder = path if location.folder else path.parent
    else:
        folder = next(parent for parent in path.parents if parent.exists())
        if not folder.is_dir():
            raise InputError(f"{location}: cannot be created, {folder} is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{location}: cannot be written ({folder}: permission denied)")


def holds_foreign(location: Location) -> bool:
    """Whether writing there could touch something: an existing file, or a non-empty folder."""
    path = location.path
    if location.folder:
        return path.is_dir() and any(path.iterdir())
    return path.exists()


def folder_files(folder: Path) -> set[Path]:
    """Every file under `folder` (absolute paths, no symlinks followed)."""
    base = Path(os.path.abspath(folder))
    return {base / Path(root).relative_to(base) / name for root, _, names in os.walk(base) for name in names}
