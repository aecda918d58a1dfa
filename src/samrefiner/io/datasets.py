"""The common shape of the three dataset kinds `samrefiner refine` reads and writes.

A dataset pairs an input (images plus coarse masks in one of three formats) with an output
location in the same format. The runner only sees this interface:

- `refs()`: every image of the dataset as a cheap `SampleRef` (nothing decoded yet), in a stable
  order; `ref.key` names the image uniquely and is used for resume records and overlays.
- `load(ref)`: the decoded `Sample` (RGB image, coarse masks N x H x W, one metadata dict per
  object); raises `InputError` naming the file when the image or its masks cannot be used.
- `write(sample, result)`: writes the refined result of one image, each file atomically, and
  returns what the resume record must keep beyond the scores (COCO: the refined annotations).
- `input_files(ref)`: the files of one image, undecoded (a resume checks them for changes).
- `Sample.context`: what the format's writer needs besides the masks, a frozen `SampleContext`
  of the format's own (e.g. `LabelMapContext`); only the format's module reads its fields: code
  outside it asks the dataset (`MaskFolders.object_files`, `LabelMaps.map_file`).
- `finalize(outputs)`: called once at the end of a run with what `write` returned for every
  finished image, of this run and earlier ones (COCO: merges them into the output JSON), as a
  mapping that reads each image's part of its record from disk when it is looked up.

Output locations: a folder output keeps its bookkeeping in `<out>/.samrefiner/`, the per-object
scores in `<out>/scores.jsonl` and errors in `<out>/errors.txt`; a file output (`refined.json`)
keeps them beside it: `refined.work/`, `refined.scores.jsonl`, `refined.errors.txt`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.listing import ambiguous


@dataclass(frozen=True)
class SampleRef:
    """One image of a dataset before anything is decoded."""

    key: str  # unique name of the image in the dataset (relative path without suffix, or COCO id)
    name: str  # the file to name in messages about this image


@dataclass(frozen=True)
class SampleContext:
    """What a format's writer needs of one image besides the masks; each format subclasses it with
    its own fields."""


ContextT = TypeVar("ContextT", bound=SampleContext)


@dataclass
class Sample:
    """One decoded image with its coarse masks, ready for the refiner."""

    ref: SampleRef
    image_path: Path
    image: np.ndarray  # H x W x 3 uint8 RGB
    masks: np.ndarray  # N x H x W bool
    objects: list[dict[str, Any]]  # per object: "id" plus format-specific fields ("category_id")
    context: SampleContext | None = None  # what the format's writer needs besides the masks
    inputs: list[dict[str, Any]] | None = None  # fingerprints of `Dataset.input_files` (set by the runner)


@dataclass(frozen=True)
class OutputLayout:
    """Where a run writes its results and bookkeeping."""

    out: Path
    work_dir: Path
    scores_path: Path
    errors_path: Path

    @classmethod
    def folder(cls, out: Path) -> OutputLayout:
        return cls(out, out / ".samrefiner", out / "scores.jsonl", out / "errors.txt")

    @classmethod
    def file(cls, out: Path) -> OutputLayout:
        stem = out.with_suffix("")
        return cls(
            out,
            stem.with_name(stem.name + ".work"),
            stem.with_name(stem.name + ".scores.jsonl"),
            stem.with_name(stem.name + ".errors.txt"),
        )

    def written_paths(self) -> list[Path]:
        return [self.out, self.work_dir, self.scores_path, self.errors_path]


class Dataset(ABC):
    """Images and coarse masks in one format, and where their refined version goes."""

    images: Path  # the --images folder
    layout: OutputLayout

    @abstractmethod
    def refs(self) -> list[SampleRef]:
        """Every image of the dataset, in a stable order."""

    @abstractmethod
    def load(self, ref: SampleRef) -> Sample:
        """Decode one image and its coarse masks (InputError when they cannot be used)."""

    @abstractmethod
    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        """Write one image's refined masks (`result`: the refiner's RefineResult).

        Returns what `finalize` will need of this image (kept in its resume record).
        """

    @abstractmethod
    def input_files(self, ref: SampleRef) -> list[Path]:
        """The files this image is made of (image, mask files, map, label file), without decoding
        them; InputError when they cannot be told. `--resume` redoes an image when one changed."""

    def finalize(self, outputs: Mapping[str, dict[str, Any]]) -> None:  # noqa: B027 (a no-op by default)
        """Called at the end of a run with `write`'s return value for every finished image."""


def context_of(sample: Sample, kind: type[ContextT]) -> ContextT:
    """The sample's context as the format `kind` made it; TypeError when another format (or none) loaded it."""
    if not isinstance(sample.context, kind):
        raise TypeError(f"{sample.ref.name}: loaded as {type(sample.context).__name__}, not {kind.__name__}")
    return sample.context


def check_claims(found: dict[str, list[Path]], images: dict[str, list[Path]], what: str) -> None:
    """InputError, before any image is read, when a mask, map or label file's key names several
    files of its own kind or several images (`found`: key -> files, as `list_files` gives)."""
    for key, paths in found.items():
        if len(paths) > 1:
            raise InputError(ambiguous(key, paths, what))
        claimants = images.get(key, [])
        if len(claimants) > 1:
            names = " and ".join(str(path) for path in claimants)
            raise InputError(f"{paths[0]}: claimed by several images ({names}): keep one")


def check_mask_sizes(image: np.ndarray, image_path: Path, masks: list[np.ndarray], names: list[str]) -> None:
    """InputError naming the mask and the image when a coarse mask is not the image's size."""
    height, width = image.shape[:2]
    for mask, name in zip(masks, names):
        if mask.shape != (height, width):
            raise InputError(
                f"{name}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is {width}x{height}"
            )
