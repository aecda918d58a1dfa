"""What one image's input files were, so that `--resume` redoes exactly the images whose inputs changed.

A fingerprint is one entry per input file (the image, its mask files, its label map or label
file): the absolute path, the sha256 of the bytes, and the file's size, mtime, ctime and inode.
A file whose size, mtime, ctime and inode are all unchanged has not been written since (any write
moves ctime, which no user tool can set back), so checking a finished image costs one `stat` per
file; only a file whose status changed is hashed again, and it counts as changed only when its
bytes differ. A file added to or removed from an image's inputs (a new mask in its folder) is a
change too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from samrefiner.io.digests import file_sha256

STATUS_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode")


def fingerprint(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """One entry per file, in the order given (JSON-ready)."""
    return [{"file": os.path.abspath(path), **_status(Path(path)), "sha256": file_sha256(Path(path))} for path in paths]


def first_change(recorded: list[dict[str, Any]] | None, paths: Iterable[Path]) -> str | None:
    """The first input file that differs from `recorded` ("<file>: changed", "added", "removed"),
    or None when every file is as it was. No record of the inputs (an older run) is a change."""
    if recorded is None:
        return "inputs not recorded by the earlier run"
    before = {entry["file"]: entry for entry in recorded}
    now = [os.path.abspath(path) for path in paths]
    for name in now:
        entry = before.pop(name, None)
        if entry is None:
            return f"{name}: added"
        if _changed(entry, Path(name)):
            return f"{name}: changed"
    return f"{next(iter(before))}: removed" if before else None


def _status(path: Path) -> dict[str, int]:
    status = path.stat()
    values = (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)
    return dict(zip(STATUS_FIELDS, values))


def _changed(entry: dict[str, Any], path: Path) -> bool:
    try:
        if all(entry.get(name) == value for name, value in _status(path).items()):
            return False
        return file_sha256(path) != entry.get("sha256")
    except OSError:
        return True
