"""YOLO label files: one object per line, read as Ultralytics and supervision read them.

A line is either a segment `class x1 y1 x2 y2 x3 y3 ...` (at least 3 vertices) or a box
`class cx cy w h` (what detection datasets and supervision write for objects without a mask),
every coordinate normalised to 0-1. The class id is a whole number, written as an integer or as a
float (`19.0`, `1.000000e+00`: Ultralytics reads the class column as floats), from 0 to the
number of classes - 1. A box is read as the filled box (the coarse mask of a detection).
Blank lines are kept in place: a line's object id is its line number, the same in the refined
output, which keeps every line where it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.yolo_polygons import box_vertices, fill

BOX_VALUES = 4


@dataclass(frozen=True)
class LabelLine:
    """One line of a label file: its number (from 1), its text, and for an object its class token
    (kept as written), class id, normalised vertices (K x 2) and whether it was a box."""

    number: int
    text: str
    class_token: str = ""
    class_id: int = -1
    vertices: np.ndarray | None = None
    box: bool = False

    @property
    def is_object(self) -> bool:
        return self.vertices is not None

    def mask(self, height: int, width: int) -> np.ndarray:
        """The object's pixels at this image size (Ultralytics' and supervision's rasterisation)."""
        assert self.vertices is not None, "a blank line has no mask"
        return fill(self.vertices, height, width)


def read_label_file(path: Path, class_count: int | None) -> list[LabelLine]:
    """Every line of a label file, blank lines included; InputError (`file:line: what`) on the first
    malformed one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error})") from None
    return [
        parse_label_line(line, number, class_count, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), 1)
    ]


def parse_label_line(line: str, number: int, class_count: int | None, where: str) -> LabelLine:
    """One line (blank, box or segment); InputError naming `where` when it is none of these."""
    tokens = line.split()
    if not tokens:
        return LabelLine(number, "")
    values = tokens[1:]
    if len(values) != BOX_VALUES and (len(values) < 6 or len(values) % 2):
        raise InputError(
            f"{where}: expected `class cx cy w h` (a box) or `class x1 y1 x2 y2 x3 y3 ...` (a polygon of "
            f"3 or more vertices), got {len(values)} numbers after the class id"
        )
    class_id = parse_class_id(tokens[0], class_count, where)
    coordinates = _numbers(values, where)
    if len(values) == BOX_VALUES:
        return LabelLine(number, line.strip(), tokens[0], class_id, box_vertices(*coordinates), box=True)
    return LabelLine(number, line.strip(), tokens[0], class_id, coordinates.reshape(-1, 2))


def parse_class_id(token: str, class_count: int | None, where: str) -> int:
    """A class id written as an integer or a whole float, below `class_count` when known."""
    try:
        value = float(token)
    except ValueError:
        raise InputError(f"{where}: class id {token!r} is not a number") from None
    if not math.isfinite(value) or not value.is_integer():
        raise InputError(f"{where}: class id {token!r} is not a whole number")
    class_id = int(value)
    if class_id < 0:
        raise InputError(f"{where}: class id {token} is negative")
    if class_count is not None and class_id >= class_count:
        raise InputError(f"{where}: class id {token} is outside the {class_count} classes of data.yaml")
    return class_id


def _numbers(values: list[str], where: str) -> np.ndarray:
    """The coordinates as floats, each finite and within 0-1 (Ultralytics' check)."""
    try:
        coordinates = np.array([float(value) for value in values])
    except ValueError:
        raise InputError(f"{where}: coordinates must be numbers") from None
    if not np.isfinite(coordinates).all() or coordinates.min() < 0 or coordinates.max() > 1:
        raise InputError(f"{where}: coordinates must be normalised to 0-1")
    return coordinates
