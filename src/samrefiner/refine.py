"""The SAMRefiner cascade (SPEC section 3): mine prompts from coarse masks, decode, keep the best
candidate, and repeat with the refined masks as the new coarse masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samrefiner.adapter import IoUAdapter, adapted, resolve_adapter
from samrefiner.config import RefinerConfig
from samrefiner.errors import InputError
from samrefiner.io.images import read_image
from samrefiner.io.maskvalues import ARRAY_HINT, object_mask
from samrefiner.mining import mine_in_threads
from samrefiner.models.base import Decoded, Encoding, PromptableModel
from samrefiner.prompts import Geometry, PromptMiner, Prompts, tight_boxes
from samrefiner.regions import paint_back, split_then_merge
from samrefiner.timing import stage

MaskInput = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]
"""What `Refiner.refine` takes as masks: N x H x W (or one H x W) array or tensor, or a list of H x W."""

_UPSCALE_PIXELS = 1 << 26  # logits upscaled at once: bounds the float buffer (256 MiB)
_CANDIDATES = 3  # SAM's multimask count, used for the score arrays when nothing was decoded
_DECODED_OBJECTS = 128  # objects decoded per group: their 3 x 256 x 256 float logits take 96 MiB


@dataclass(frozen=True)
class RefineResult:
    """Refined masks of N objects and what produced them.

    masks (N, H, W) bool; scores (N,) the predicted IoU of each returned mask; candidate_scores
    (N, C) the candidates' predicted IoU in the iteration that produced it (C = 3 for SAM) and
    chosen (N,) the index picked among them; prompts the prompts mined from the input masks.
    empty_input: the coarse mask was empty (its output is empty; never decoded). empty_output:
    some iteration returned an empty mask, so the object kept the mask of the iteration before
    (and stopped refining). Objects whose returned mask is their coarse mask have scores NaN and
    chosen -1. An object whose mask comes back unchanged is settled: further iterations would
    mine the same prompts and decode the same output, so it is not decoded again (except with
    the "random" point strategy).
    """

    masks: np.ndarray
    scores: np.ndarray
    candidate_scores: np.ndarray
    chosen: np.ndarray
    prompts: Prompts
    empty_input: np.ndarray
    empty_output: np.ndarray

    def __len__(self) -> int:
        """The number of objects."""
        return len(self.masks)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> RefineResult:
        """The result of some objects: an int (one object, kept as a result of length 1), a
        slice, integer indices or a boolean array over the objects."""
        if isinstance(index, (int, np.integer)):
            position = range(len(self))[index]  # IndexError when out of range; negatives count back
            index = slice(position, position + 1)
        elif not isinstance(index, slice):
            index = np.asarray(index)
        return RefineResult(
            self.masks[index],
            self.scores[index],
            self.candidate_scores[index],
            self.chosen[index],
            self.prompts.select(index),
            self.empty_input[index],
            self.empty_output[index],
        )

    @property
    def xyxy(self) -> np.ndarray:
        """(N, 4) int64 boxes x1, y1, x2, y2 of the refined masks, x2/y2 the last foreground
        column/row (as supervision's mask_to_xyxy); zeros for an empty mask."""
        return tight_boxes(self.masks)

    def to_rle(self) -> list[dict[str, Any]]:
        """Each refined mask as a compressed COCO RLE (pycocotools' dict, `counts` a str: JSON-ready)."""
        from samrefiner.io.rle import encode_mask

        return [encode_mask(mask) for mask in self.masks]

    def to_polygons(self, tolerance: float | None = None) -> list[list[np.ndarray]]:
        """Each refined mask's outlines (outer boundaries and holes) as K x 2 arrays of (x, y)
        pixel-corner coordinates, simplified within `tolerance` pixels (default
        samrefiner.io.polygons.DEFAULT_TOLERANCE, 0.25: every pixel step kept); filled with the
        even-odd rule they give the mask back."""
        from samrefiner.io.polygons import DEFAULT_TOLERANCE, outlines

        return [outlines(mask, DEFAULT_TOLERANCE if tolerance is None else tolerance) for mask in self.masks]


class Refiner:
    """SAMRefiner on a promptable model: `refine(image, masks)` for the masks of one image.

    `adapter` is the optional SAMRefiner++ IoU adapter (an `IoUAdapter` or its .safetensors file,
    refused when made for another model); it only re-scores the candidates.
    `model_turn` is entered around every model call (encode, decode, upscale): samrefiner.run.overlap
    sets it to let one thread at a time use the model.
    """

    def __init__(
        self,
        model: PromptableModel,
        config: RefinerConfig | None = None,
        adapter: IoUAdapter | str | Path | None = None,
    ) -> None:
        self.model = model
        self.config = config if config is not None else RefinerConfig()
        self.adapter = resolve_adapter(adapter, model)
        self.model_turn: Callable[[], AbstractContextManager] = nullcontext

    def refine(self, image: np.ndarray | str | Path, masks: MaskInput) -> RefineResult:
        """Refine N coarse masks (N x H x W array or list of H x W; bool, 0/1 or 0/255) of an
        H x W x 3 uint8 RGB image or image file."""
        source = str(image) if isinstance(image, (str, Path)) else "image"
        pixels = read_image(image) if isinstance(image, (str, Path)) else _check_image(image)
        coarse = as_masks(masks, pixels.shape[:2], source)
        if len(coarse) == 0:
            return _no_objects(pixels.shape[:2], self.config)
        with self.model_turn(), stage("encode"):
            encoding = self.model.encode(pixels)
        return self.refine_encoded(encoding, coarse)

    def refine_label_map(self, image: np.ndarray | str | Path, label_map: np.ndarray) -> np.ndarray:
        """Refine a semantic label map region by region (SPEC section 4); see
        `refine_label_map`."""
        return refine_label_map(self, image, label_map)

    def refine_encoded(self, encoding: Encoding, masks: Any) -> RefineResult:
        """`refine` for an image this model has already encoded (masks as for `refine`)."""
        current = as_masks(masks, encoding.original_size)
        count = len(current)
        empty_input = ~current.reshape(count, -1).any(axis=1)
        empty_output = np.zeros(count, dtype=bool)
        scores = np.full(count, np.nan, np.float32)
        candidates = np.full((count, _CANDIDATES), np.nan, np.float32)
        chosen = np.full(count, -1, np.int64)
        with stage("mine"):
            miner = self._miner(encoding)
            first = mine_in_threads(miner, current)
        active = np.flatnonzero(~empty_input)
        prompts = first.select(active)
        for iteration in range(self.config.iterations):
            if active.size == 0:
                break
            if iteration > 0:
                with stage("mine"):
                    prompts = mine_in_threads(miner, current[active])
            iou, best, refined = self._step(encoding, prompts)
            good = refined.reshape(len(refined), -1).any(axis=1)
            empty_output[active[~good]] = True
            changed = np.array([not np.array_equal(mask, current[index]) for mask, index in zip(refined, active)], bool)
            if not good.all():
                active, refined, iou, best, changed = active[good], refined[good], iou[good], best[good], changed[good]
            if candidates.shape[1] != iou.shape[1]:
                candidates = np.full((count, iou.shape[1]), np.nan, np.float32)
            current[active], candidates[active], chosen[active] = refined, iou, best
            scores[active] = iou[np.arange(len(best)), best]
            if self.config.point_strategy != "random":
                active = active[changed]  # an unchanged mask would give the same prompts, so the same output
        return RefineResult(current, scores, candidates, chosen, first, empty_input, empty_output)

    def _miner(self, encoding: Encoding) -> PromptMiner:
        config = self.config
        return PromptMiner(
            encoding.original_size,
            encoding.input_size,
            encoding.embeddings,
            use_negative_point=config.use_points and config.use_negative_point,
            use_mask=config.use_mask,
            box_expand_threshold=config.box_expand_threshold if config.use_box else 0.0,
            box_expand_passes=config.box_expand_passes,
            gamma=config.gamma,
            strength=config.strength,
            point_strategy=config.point_strategy,
            rng=np.random.default_rng(config.seed),
            geometry=Geometry.of(self.model),
        )

    def _step(self, encoding: Encoding, prompts: Prompts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One cascade iteration: candidates' predicted IoU (n, C), the chosen index (n,) and the
        chosen masks (n, H, W). Objects go to the model in groups of at most _DECODED_OBJECTS, so
        that the candidates' logits held at once stay bounded however many objects an image has."""
        masks = np.empty((len(prompts), *encoding.original_size), dtype=bool)
        ious, bests = [], []
        for start in range(0, len(prompts), _DECODED_OBJECTS):
            part = slice(start, start + _DECODED_OBJECTS)
            with self.model_turn(), stage("decode"):
                decoded = self._decode(encoding, prompts.select(part))
                iou = decoded.iou_scores.float().cpu().numpy()
            best = iou.argmax(axis=1)
            with self.model_turn(), stage("upscale"):
                masks[part] = self._chosen_masks(decoded, best, encoding)
            ious.append(iou)
            bests.append(best)
        return np.concatenate(ious), np.concatenate(bests), masks

    def _decode(self, encoding: Encoding, prompts: Prompts) -> Decoded:
        """All objects' candidates, `chunk_size` objects per decoder call, with the prompts switched on."""
        config = self.config
        with adapted(self.adapter, self.model):
            return self.model.decode(
                encoding,
                prompts.points.astype(np.float32) if config.use_points else None,
                prompts.labels if config.use_points else None,
                prompts.boxes.astype(np.float32) if config.use_box else None,
                torch.from_numpy(prompts.mask_inputs) if config.use_mask else None,
                chunk_size=config.chunk_size,
            )

    def _chosen_masks(self, decoded: Decoded, best: np.ndarray, encoding: Encoding) -> np.ndarray:
        """Upscale only the chosen candidate of each object: (n, H, W) bool, logit > 0."""
        index = torch.from_numpy(best).to(decoded.low_res_logits.device)
        logits = decoded.low_res_logits[torch.arange(len(best), device=index.device), index][:, None]
        height, width = encoding.original_size
        step = max(1, min(self.config.chunk_size, _UPSCALE_PIXELS // (height * width)))
        masks = np.empty((len(best), height, width), dtype=bool)
        for start in range(0, len(best), step):
            upscaled = self.model.upscale(logits[start : start + step], encoding)
            masks[start : start + step] = (upscaled[:, 0] > 0).cpu().numpy()
        return masks


def _no_objects(size: tuple[int, int], config: RefinerConfig) -> RefineResult:
    """The result for an image given no masks."""
    slots = 2 if config.use_points and config.use_negative_point else 1
    prompts = Prompts(
        np.zeros((0, slots, 2), np.int64), np.zeros((0, slots), np.int64), np.zeros((0, 4), np.int64), np.zeros(0, bool)
    )
    nothing = np.zeros(0, bool)
    return RefineResult(
        np.zeros((0, *size), bool),
        np.zeros(0, np.float32),
        np.zeros((0, _CANDIDATES), np.float32),
        np.zeros(0, np.int64),
        prompts,
        nothing,
        nothing,
    )


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image must be an H x W x 3 uint8 RGB array or a file path, got shape {shape} dtype {dtype}")
    return image


def as_masks(masks: Any, size: tuple[int, int], source: str = "image") -> np.ndarray:
    """N x H x W bool from an array (N x H x W or one H x W) or a list of H x W masks of bool or
    integer dtype. Sizes must match the image's. Values follow the mask-value rule of
    `samrefiner.io.maskvalues`, as files do: bool, or one nonzero value per mask (0/1, 0/255,
    0/100, ...); a mask holding several values (an id map, a soft or JPEG-decoded mask) is an
    InputError naming it."""
    if isinstance(masks, (list, tuple)):
        arrays = [_as_array(mask) for mask in masks]
        for index, mask in enumerate(arrays):
            if mask.ndim != 2:
                raise InputError(f"{source}: mask {index} must be H x W, got shape {mask.shape}")
            _check_mask(mask.dtype, mask.shape, size, f"{source}: mask {index}")
        return _objects(np.stack(arrays), source) if arrays else np.zeros((0, *size), dtype=bool)
    masks = _as_array(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise InputError(f"{source}: masks must be N x H x W or H x W, got shape {masks.shape}")
    _check_mask(masks.dtype, masks.shape[1:], size, f"{source}: masks")
    return _objects(masks, source)


def _objects(masks: np.ndarray, source: str) -> np.ndarray:
    """N x H x W bool under the mask-value rule, each mask on its own."""
    if masks.dtype == bool:
        return masks.copy()
    return np.stack([object_mask(mask, f"{source}: mask {index}", ARRAY_HINT) for index, mask in enumerate(masks)])


def _as_array(mask: Any) -> np.ndarray:
    return mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)


def _check_mask(dtype: np.dtype, shape: tuple[int, ...], size: tuple[int, int], what: str) -> None:
    if not (np.issubdtype(dtype, np.bool_) or np.issubdtype(dtype, np.integer)):
        raise InputError(f"{what}: dtype {dtype} is not a mask type; use bool or integer masks (0/1 or 0/255)")
    if tuple(shape) != tuple(size):
        raise InputError(f"{what}: size {shape[0]}x{shape[1]} (HxW) differs from the image's {size[0]}x{size[1]}")


def refine_label_map(refiner: Refiner, image: np.ndarray | str | Path, label_map: np.ndarray) -> np.ndarray:
    """Refine every split-then-merge region of `label_map` as an instance and paint them back.

    Refined pixels take their region's class; where regions overlap, the one with the higher
    predicted IoU wins (the later region on a tie; a region the refiner returned unrefined, with
    score NaN, loses); pixels no region claims become background; void pixels of the input stay
    void. Same shape and dtype as `label_map`.
    """
    label_map = np.asarray(label_map)
    regions = split_then_merge(label_map)
    result = refiner.refine(image, np.stack([mask for _, mask in regions])) if regions else None
    return paint_back(label_map, [class_id for class_id, _ in regions], result)
