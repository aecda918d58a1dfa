"""Flawed masks made from ground truth the way DAVIS-585 was made (seeded and reproducible).

The image is cut into SLIC superpixels (a count drawn from 50 to 700). Up to 10 defects are
seeded on superpixels on the object's boundary, inside it or outside it (probabilities
0.65 / 0.25 / 0.1): a defect inside removes object, one outside adds background, one on the
boundary does either (even odds). Defects then grow superpixel by superpixel into neighbours
until the IoU with the ground truth falls below a target drawn uniformly from [0.75, 0.85]; a
superpixel that would take it below the band is skipped. When an attempt cannot land in the
band, finer superpixels are tried; the closest mask any attempt reached is returned, flagged as
outside the band. Void pixels (GrabCut's 128 band, `samrefiner.evaluation.groundtruth`) are left out of
every IoU, as `samrefiner eval` does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from skimage.segmentation import slic

from samrefiner.evaluation.groundtruth import Truth
from samrefiner.evaluation.metrics import mask_iou
from samrefiner.io.datasets import Sample

IOU_BAND = (0.75, 0.85)
SEGMENT_RANGE = (50, 700)
MAX_DEFECTS = 10
ATTEMPTS = 4
LOCATIONS = ("boundary", "inside", "outside")
LOCATION_PROBABILITIES = (0.65, 0.25, 0.1)
SLIC_COMPACTNESS = 10.0


@dataclass(frozen=True)
class Corruption:
    """A flawed mask and how it was made."""

    mask: np.ndarray
    iou: float
    segments: int
    defects: int
    in_band: bool


def object_rng(seed: int, name: str) -> np.random.Generator:
    """The generator for one object: depends on the seed and the object's name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def corrupt_sample(sample: Sample, seed: int, truths: list[Truth] | None = None) -> list[Corruption]:
    """Flawed masks for every object of a dataset sample; object k's generator is seeded with
    `seed` and the name `<image key>/<object id>`, so results do not depend on the other files.
    `truths` (one per object) replace the sample's masks and bring their void pixels."""
    truths = truths or [Truth(mask, None) for mask in sample.masks]
    return [
        corrupt_mask(sample.image, truth.mask, object_rng(seed, f"{sample.ref.key}/{item['id']}"), void=truth.void)
        for truth, item in zip(truths, sample.objects)
    ]


def corrupt_mask(
    image: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    band: tuple[float, float] = IOU_BAND,
    void: np.ndarray | None = None,
) -> Corruption:
    """A flawed copy of `gt` (H x W bool) whose IoU with it outside `void` lies in `band` when reachable."""
    if gt.shape != image.shape[:2]:
        raise ValueError(f"mask is {gt.shape[1]}x{gt.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
    gt = gt.astype(bool)
    kept = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    best: Corruption | None = None
    for attempt in range(ATTEMPTS):
        low_count = SEGMENT_RANGE[0] + (SEGMENT_RANGE[1] - SEGMENT_RANGE[0]) * attempt // ATTEMPTS
        n_segments = int(rng.integers(low_count, SEGMENT_RANGE[1] + 1))
        labels = slic(image, n_segments=n_segments, compactness=SLIC_COMPACTNESS, start_label=0)
        state, defects = _grow_defects(_Superpixels(labels, gt & kept, kept), rng, band)
        mask = np.where(state[labels] < 0, gt, state[labels] == 1)
        iou = mask_iou(gt, mask, void)
        result = Corruption(mask, iou, int(labels.max()) + 1, defects, _distance(iou, band) == 0)
        if best is None or _distance(result.iou, band) < _distance(best.iou, band):
            best = result
        if best.in_band:
            break
    return best


class _Superpixels:
    """Areas, ground-truth overlap, location class and neighbours of each superpixel (pixels
    outside `kept`, the void, count for nothing)."""

    def __init__(self, labels: np.ndarray, gt: np.ndarray, kept: np.ndarray) -> None:
        count = int(labels.max()) + 1
        self.area = np.bincount(labels[kept], minlength=count)
        self.foreground = np.bincount(labels[gt], minlength=count)
        self.gt_area = int(gt.sum())
        location = np.full(count, LOCATIONS.index("boundary"))
        location[self.foreground == self.area] = LOCATIONS.index("inside")
        location[self.foreground == 0] = LOCATIONS.index("outside")
        self.location = location
        self.neighbours = _neighbours(labels, count)

    def can_take(self, index: int, remove: bool) -> bool:
        """Whether changing this superpixel in that direction changes the mask at all."""
        return self.foreground[index] > 0 if remove else self.foreground[index] < self.area[index]


@dataclass
class _Defect:
    remove: bool
    frontier: list[int] = field(default_factory=list)


def _grow_defects(
    superpixels: _Superpixels, rng: np.random.Generator, band: tuple[float, float]
) -> tuple[np.ndarray, int]:
    """Grow defects until the IoU drops below a target drawn uniformly from `band` (never below it).

    Returns, per superpixel, -1 untouched, 0 removed, 1 added; and the number of defects seeded.
    """
    state = np.full(len(superpixels.area), -1)
    intersection = union = superpixels.gt_area
    if union == 0:
        return state, 0
    target = float(rng.uniform(*band))
    seeded = np.zeros(len(state), dtype=bool)
    defects = [_seed_defect(superpixels, seeded, rng) for _ in range(int(rng.integers(1, MAX_DEFECTS + 1)))]
    defects = [defect for defect in defects if defect is not None]
    while intersection / union > target:
        active = [defect for defect in defects if defect.frontier]
        if not active:
            seeded |= state >= 0
            extra = _seed_defect(superpixels, seeded, rng) if len(defects) < MAX_DEFECTS else None
            if extra is None:
                break
            defects.append(extra)
            continue
        defect = active[int(rng.integers(len(active)))]
        index = defect.frontier.pop(int(rng.integers(len(defect.frontier))))
        if state[index] >= 0:
            continue
        if defect.remove:
            new_intersection, new_union = intersection - superpixels.foreground[index], union
        else:
            new_intersection, new_union = intersection, union + superpixels.area[index] - superpixels.foreground[index]
        if new_intersection / new_union < band[0]:
            continue
        state[index] = 0 if defect.remove else 1
        intersection, union = new_intersection, new_union
        defect.frontier.extend(
            int(n) for n in superpixels.neighbours[index] if state[n] < 0 and superpixels.can_take(n, defect.remove)
        )
    return state, len(defects)


def _seed_defect(superpixels: _Superpixels, taken: np.ndarray, rng: np.random.Generator) -> _Defect | None:
    """A new defect on a superpixel not yet `taken` (marked taken now); None when none is left."""
    available = [np.flatnonzero(~taken & (superpixels.location == code)) for code in range(len(LOCATIONS))]
    weights = np.array([p if len(a) else 0.0 for p, a in zip(LOCATION_PROBABILITIES, available)])
    if weights.sum() == 0:
        return None
    location = int(rng.choice(len(LOCATIONS), p=weights / weights.sum()))
    index = int(rng.choice(available[location]))
    taken[index] = True
    remove = {"inside": True, "outside": False}.get(LOCATIONS[location], bool(rng.integers(2)))
    if not superpixels.can_take(index, remove):
        remove = not remove
    return _Defect(remove, [index])


def _neighbours(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """For each superpixel, the labels of the 4-connected superpixels touching it."""
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
            np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0)
    starts = np.searchsorted(pairs[:, 0], np.arange(count + 1))
    return [pairs[starts[i] : starts[i + 1], 1] for i in range(count)]


def _distance(iou: float, band: tuple[float, float]) -> float:
    return max(band[0] - iou, iou - band[1], 0.0)
