"""`apply-review`: the final dataset, refined or coarse per object as the reviewer decided."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from samrefiner.errors import InputError
from samrefiner.review.datasets import DatasetPair, ReadLog, read_predicted_ious
from samrefiner.review.decisions import Decisions


@dataclass
class ChosenMasks:
    """What a dataset writer takes from a refine result: one mask and one score per object."""

    masks: np.ndarray
    scores: np.ndarray


@dataclass
class ApplySummary:
    """What `apply_decisions` wrote; images the refine run did not write are kept coarse."""

    log: ReadLog = field(default_factory=ReadLog)
    images: int = 0
    refined: int = 0  # objects that took their refined mask
    coarse: int = 0  # objects that kept their coarse mask
    matched_decisions: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.images} images written: {self.refined} objects refined, {self.coarse} kept coarse; "
            f"{self.matched_decisions} decisions applied"
        )
        if self.log.unrefined:
            text += f"; {self.log.unrefined} images had no refined version and were kept coarse"
        if self.log.errors:
            text += f"; {len(self.log.errors)} images failed"
        return text


def apply_decisions(pair: DatasetPair, decisions: Decisions) -> ApplySummary:
    """Write every image of the coarse dataset through its own writer (in the input's format),
    each object refined or coarse as `decisions` say; failures are listed in the summary."""
    summary = ApplySummary()
    predicted = read_predicted_ious(pair.refined.layout.scores_path)
    records = {}
    for ref in pair.coarse.refs():
        was_refined = ref.key in pair.refined_refs
        try:
            if was_refined:
                sample, refined = pair.load(ref)
            else:
                sample = pair.coarse.load(ref)
                refined = sample.masks
            ids = [str(meta["id"]) for meta in sample.objects]
            use_refined = np.array([was_refined and decisions.use_refined(ref.key, key) for key in ids], bool)
            masks = np.where(use_refined[:, None, None], refined, sample.masks)
            scores = np.array([_score(predicted.get((ref.key, key), 0.0)) for key in ids], np.float32)
            records[ref.key] = pair.coarse.write(sample, ChosenMasks(masks, scores))
        except InputError as error:
            summary.log.errors.append(str(error))
            continue
        summary.images += 1
        summary.log.unrefined += not was_refined
        summary.refined += int(use_refined.sum())
        summary.coarse += int((~use_refined).sum())
        summary.matched_decisions += sum((ref.key, key) in decisions.choices for key in ids)
    pair.coarse.finalize(records)
    return summary


def _score(predicted_iou: float | None) -> float:
    """A writer's score: NaN for an object the refine run kept coarse, as `refine` passes it."""
    return float("nan") if predicted_iou is None else predicted_iou
