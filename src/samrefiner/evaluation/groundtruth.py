"""Ground-truth masks with void pixels, for `samrefiner eval --void` and `samrefiner corrupt`.

A void value marks pixels whose truth is unknown; scores leave them out (`samrefiner.evaluation.metrics`).
`--void auto` (the default) is 128 for a mask whose values are exactly {0, 128, 255} (GrabCut's
"uncertain" band) and no void otherwise; for label maps it is 255. With a void value V the
object is every nonzero pixel that is not V; a mask without void is read by `read_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.datasets import Dataset, Sample
from samrefiner.io.images import read_mask
from samrefiner.io.labelmaps import read_label_map
from samrefiner.io.masks import MaskFolders

AUTO = "auto"
NONE = "none"
GRABCUT_VALUES = frozenset({0, 128, 255})
GRABCUT_VOID = 128
LABEL_MAP_VOID = 255
MAX_VALUE = 65535  # 16-bit PNG

Void = int | str | None  # a value, AUTO, or None (no void)


class VoidError(InputError):
    """A void value that is malformed or does not apply, said as "void value V: ..."; `naming`
    says it with another name for the value (the CLI's option)."""

    def __init__(self, value: object, problem: str, path: str | Path | None = None) -> None:
        self.value, self.problem, self.path = value, problem, path
        super().__init__(self.naming("void value"))

    def naming(self, name: str) -> str:
        """The message with `name` for the void value, e.g. `--void 7: ...`."""
        where = "" if self.path is None else f"{self.path}: "
        return f"{where}{name} {self.value}{self.problem}"


@dataclass(frozen=True)
class Truth:
    """One ground-truth object: its mask and the void pixels (None when it has none)."""

    mask: np.ndarray
    void: np.ndarray | None


def parse_void(text: str) -> Void:
    """Void text -> AUTO, None ("none") or a pixel value; VoidError for anything else."""
    if text in (AUTO, NONE):
        return None if text == NONE else AUTO
    if not text.isdigit() or int(text) > MAX_VALUE:
        raise VoidError(text, f": expected auto, none or a pixel value 0-{MAX_VALUE}")
    return int(text)


def label_map_void(void: Void) -> int | None:
    """The void label of label maps: 255 for AUTO."""
    return LABEL_MAP_VOID if void == AUTO else void


def read_truth(path: str | Path, void: Void) -> Truth:
    """A ground-truth mask file and its void pixels under the `void` rule."""
    try:
        values, _ = read_label_map(path)  # single-channel pixel values, as stored
    except InputError:
        mask = read_mask(path)  # raises its own error when the file is unreadable
        if void not in (AUTO, None):
            raise VoidError(void, " needs a single-channel mask", path) from None
        return Truth(mask, None)
    value = void
    if void == AUTO:
        value = GRABCUT_VOID if set(np.unique(values).tolist()) == GRABCUT_VALUES else None
    if value is None or not (values == value).any():
        return Truth(read_mask(path), None)
    pixels = values == value
    return Truth((values != 0) & ~pixels, pixels)


def sample_truths(dataset: Dataset, sample: Sample, void: Void) -> list[Truth]:
    """The ground truth of each object of a sample `dataset` loaded: mask files read again under
    the `void` rule (`read_truth`); other formats' objects have no void (YOLO polygons, COCO)."""
    if isinstance(dataset, MaskFolders):
        return [read_truth(path, void) for path in dataset.object_files(sample)]
    return [Truth(mask, None) for mask in sample.masks]
