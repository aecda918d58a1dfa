"""The neutral records a review report is built from: images and the objects in them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ReviewObject:
    """One object: its masks before and after refinement, and the refiner's predicted IoU.

    `key` names the object within its image the way the dataset does (PNG stem, COCO annotation
    id, region number); `label` is its class name ("" when the dataset has no classes);
    `kept_coarse` tells that the refine run kept its coarse mask (no predicted IoU then).
    """

    key: str
    label: str
    coarse: np.ndarray
    refined: np.ndarray
    predicted_iou: float | None = None
    kept_coarse: bool = False


@dataclass
class ReviewImage:
    """An image and its objects.

    `image_id` names the image in the dataset and in the decisions (for files: the path relative
    to the images folder); `name` is what the page shows (default: the id); `pixels` the decoded
    RGB image when the caller already has it.
    """

    image_id: str
    path: Path
    objects: list[ReviewObject] = field(default_factory=list)
    name: str = ""
    pixels: np.ndarray | None = None


@dataclass(frozen=True)
class ObjectSummary:
    """What the page shows of one object: names, scores and its thumbnail (relative to report/)."""

    image_id: str
    key: str
    label: str
    predicted_iou: float | None
    change_iou: float
    thumbnail: str
    image_name: str = ""
    kept_coarse: bool = False

    @property
    def uid(self) -> str:
        """A stable identifier of the object within a dataset."""
        return f"{self.image_id}#{self.key}"

    @property
    def attention(self) -> float:
        """The "worth a look" score, lower first: the lower of predicted IoU and change IoU;
        0 for an object that kept its coarse mask (the refiner gave up on it)."""
        if self.kept_coarse:
            return 0.0
        if self.predicted_iou is None:
            return self.change_iou
        return min(self.predicted_iou, self.change_iou)
