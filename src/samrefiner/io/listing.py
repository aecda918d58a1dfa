"""One listing of a dataset's files, shared by refine, eval, review, apply-review and corrupt.

The rule (docs/datasets.md "Which files are read"):
- a folder is searched recursively (symbolic links to files are followed, links to folders are
  not entered); every file or folder whose name starts with "." is skipped (a samrefiner
  output's `.samrefiner/`, macOS's `._name` and `.DS_Store`);
- a file's kind is its suffix, compared without regard to case: images and mask files are
  IMAGE_SUFFIXES (`a.PNG` and `a.png` alike), label maps and instance maps MAP_SUFFIXES;
- a file's key is its path relative to the folder, '/'-separated, without the suffix, case kept
  (`cats/a.PNG` -> `cats/a`); an image and its masks or map go together when their keys are equal;
- two files of one key (`a.jpg` and `a.png`) are ambiguous: both are listed under the key and
  whoever needs that key refuses it, naming both.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from samrefiner.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = IMAGE_SUFFIXES  # per-object mask files (JPEG/WebP ones are read as lossy)
MAP_SUFFIXES = (".png",)  # label maps and instance maps (lossless, one channel)


def has_suffix(name: str, suffixes: tuple[str, ...]) -> bool:
    """Whether a file name ends in one of `suffixes`, compared without regard to case."""
    return name.lower().endswith(suffixes)


def list_files(root: Path, suffixes: tuple[str, ...], what: str = "files") -> dict[str, list[Path]]:
    """Key -> the files of that key under `root` (module rule), keys sorted; InputError naming
    `root` when it is not a folder (`what` says what it should hold)."""
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of {what}")
    found: dict[str, list[Path]] = defaultdict(list)
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        relative = Path(folder).relative_to(root)
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith(".") and has_suffix(name, suffixes) and path.is_file():
                found[(relative / name).with_suffix("").as_posix()].append(path)
    return dict(sorted(found.items()))


def one_file(found: dict[str, list[Path]], key: str, root: Path, source: str, what: str = "image") -> Path:
    """The one file of `key`; InputError naming `source` when there is none, or both when several."""
    candidates = found.get(key, [])
    if not candidates:
        raise InputError(f"{source}: no {what} named {key}.* under {root}")
    if len(candidates) > 1:
        raise InputError(f"{source}: {ambiguous(key, candidates, what)}")
    return candidates[0]


def ambiguous(key: str, paths: list[Path], what: str = "image") -> str:
    """The message for several files of one key."""
    return f"several {what}s named {key} ({' and '.join(str(path) for path in paths)}): keep one"
