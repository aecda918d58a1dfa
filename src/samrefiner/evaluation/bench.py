"""Benchmark on a labelled set: coarse masks against refined ones, with the prompt ablations of
Table 1 of the paper (point, box, mask, the three pairs, all three).

Each image is encoded once; every prompt setting then refines the same coarse masks from that
encoding. A row's time is per image and counts the encoding too (what a run with only that
setting would take); the coarse row has none.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samrefiner.errors import InputError, SamRefinerError
from samrefiner.evaluation.corrupt import corrupt_sample
from samrefiner.evaluation.evaluate import json_ready
from samrefiner.evaluation.groundtruth import AUTO, Truth, sample_truths
from samrefiner.evaluation.metrics import MaskScores
from samrefiner.io.datasets import Dataset, Sample
from samrefiner.io.formats import open_dataset
from samrefiner.io.json_files import json_or_none, write_json_file
from samrefiner.models.base import PromptableModel
from samrefiner.refine import Refiner, RefinerConfig

COARSE = "coarse"
PROMPT_SETTINGS: dict[str, dict[str, bool]] = {
    "point": {"use_points": True, "use_box": False, "use_mask": False},
    "box": {"use_points": False, "use_box": True, "use_mask": False},
    "mask": {"use_points": False, "use_box": False, "use_mask": True},
    "point+box": {"use_points": True, "use_box": True, "use_mask": False},
    "point+mask": {"use_points": True, "use_box": False, "use_mask": True},
    "box+mask": {"use_points": False, "use_box": True, "use_mask": True},
    "all": {"use_points": True, "use_box": True, "use_mask": True},
}


@dataclass(frozen=True)
class LabelledImage:
    """One image with its ground-truth and coarse masks (N x H x W bool each, same objects) and
    each object's void pixels (None: none), as `samrefiner eval` leaves them out."""

    name: str
    image: np.ndarray
    gt: np.ndarray
    coarse: np.ndarray
    void: list[np.ndarray | None]


@dataclass
class BenchRow:
    """Scores of one setting over the dataset and the time it took."""

    name: str
    scores: MaskScores = field(default_factory=MaskScores)
    seconds: float = 0.0
    images: int = 0

    def summary(self) -> dict[str, float | int | None]:
        """`iou` (pooled), `mean_iou`, `boundary_iou`, `mba`, `count`, and `seconds_per_image`
        (None for the coarse masks)."""
        per_image = self.seconds / self.images if self.images and self.name != COARSE else None
        return {**self.scores.summary(), "seconds_per_image": per_image}


@dataclass
class BenchReport:
    rows: list[BenchRow]
    encode_seconds_per_image: float
    failures: list[str]


class LabelledImages:
    """Images with ground truth (the `--masks` layout of `samrefiner refine`) and coarse masks:
    read from `coarse` (same layout and file names as `gt`), or made from the ground truth by
    `samrefiner corrupt` with `seed` (the same masks it would write). Iterating loads them one by
    one; an image that cannot be used is yielded as its error. `len()` is the number of images.
    Ground truth is read with its void pixels (`samrefiner.evaluation.groundtruth`, the `auto` rule)."""

    def __init__(
        self, images: Path, gt: Path, coarse: Path | None = None, seed: int | None = None, limit: int | None = None
    ) -> None:
        if (coarse is None) == (seed is None):
            raise InputError("give either a folder of coarse masks or a seed to make them, not both")
        self.truth = open_dataset("masks", gt, images, gt)  # read only: nothing is written through it
        self.flawed = open_dataset("masks", coarse, images, coarse) if coarse is not None else None
        self.coarse, self.seed = coarse, seed
        self.refs = self.truth.refs()[:limit]

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self) -> Iterator[LabelledImage | SamRefinerError]:
        coarse_refs = {ref.key: ref for ref in self.flawed.refs()} if self.flawed is not None else {}
        for ref in self.refs:
            try:
                sample = self.truth.load(ref)
                truths = sample_truths(self.truth, sample, AUTO)
                if self.flawed is not None:
                    masks = _coarse_masks(sample, self.flawed, coarse_refs, self.coarse)
                else:
                    masks = _corrupted(sample, self.seed, truths)
            except SamRefinerError as error:
                yield error
                continue
            gt = np.stack([item.mask for item in truths])
            yield LabelledImage(ref.key, sample.image, gt, masks, [item.void for item in truths])


labelled_images = LabelledImages  # the name `samrefiner bench` and the tests call it by


def _corrupted(sample: Sample, seed: int, truths: list[Truth]) -> np.ndarray:
    return np.stack([corruption.mask for corruption in corrupt_sample(sample, seed, truths)])


def _coarse_masks(sample: Sample, flawed: Dataset, refs: dict, folder: Path) -> np.ndarray:
    """The coarse masks of `sample`'s objects, matched by image key and object file name."""
    if sample.ref.key not in refs:
        raise InputError(f"{folder}: no coarse masks for image {sample.ref.key}")
    coarse = flawed.load(refs[sample.ref.key])
    by_id = {item["id"]: mask for item, mask in zip(coarse.objects, coarse.masks)}
    missing = [item["id"] for item in sample.objects if item["id"] not in by_id]
    if missing:
        raise InputError(f"{folder}: image {sample.ref.key} has no coarse mask {missing[0]}")
    return np.stack([by_id[item["id"]] for item in sample.objects])


def run_bench(
    model: PromptableModel,
    data: Iterable[LabelledImage | SamRefinerError],
    config: RefinerConfig | None = None,
    settings: dict[str, dict[str, bool]] = PROMPT_SETTINGS,
    progress: bool = False,
) -> BenchReport:
    """Score the coarse masks and every prompt setting (applied on top of `config`); with `progress`,
    a bar on stderr over images x settings."""
    config = config or RefinerConfig()
    refiners = {name: Refiner(model, dataclasses.replace(config, **flags)) for name, flags in settings.items()}
    rows = {name: BenchRow(name) for name in [COARSE, *refiners]}
    encode_seconds, failures = 0.0, []
    total = len(data) * len(refiners) if isinstance(data, Sized) else None
    bar = tqdm(total=total, desc="bench", unit="run", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with bar:
        for item in data:
            if isinstance(item, SamRefinerError):
                failures.append(str(item))
                bar.update(len(refiners))
                continue
            bar.set_postfix_str(item.name, refresh=False)
            for gt, coarse, void in zip(item.gt, item.coarse, item.void):
                rows[COARSE].scores.add(gt, coarse, void)
            rows[COARSE].images += 1
            started = time.perf_counter()
            encoding = model.encode(item.image)
            encoded = _seconds_since(started, model)
            encode_seconds += encoded
            for name, refiner in refiners.items():
                started = time.perf_counter()
                refined = refiner.refine_encoded(encoding, item.coarse).masks
                rows[name].seconds += encoded + _seconds_since(started, model)
                rows[name].images += 1
                for gt, mask, void in zip(item.gt, refined, item.void):
                    rows[name].scores.add(gt, mask, void)
                bar.update(1)
    images = rows[COARSE].images
    return BenchReport(list(rows.values()), encode_seconds / images if images else 0.0, failures)


def _seconds_since(started: float, model: PromptableModel) -> float:
    """Wall time since `started`, after the model's GPU work has finished."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - started


def write_json(path: Path, report: BenchReport) -> None:
    """The table on a 0-1 scale (NaN as null), the encoding time per image and the failures."""
    document = {
        "rows": {row.name: json_ready(row.summary()) for row in report.rows},
        "encode_seconds_per_image": report.encode_seconds_per_image,
        "failures": report.failures,
    }
    write_json_file(path, document)


def is_bench_json(path: Path) -> bool:
    """Whether the file is a table `write_json` wrote (its "rows" and "failures")."""
    document = json_or_none(path)
    return isinstance(document, dict) and isinstance(document.get("rows"), dict) and "failures" in document
