"""SAMRefiner++ IoU adaption: train the IoU adapter on a dataset's coarse masks, no labels.

SAM stays frozen. Each coarse mask prompts SAM with one prompt type (its tight box by default),
multimask output; the target is the candidate whose mask (at the original size) has the highest
IoU with the coarse mask, and the loss is the margin ranking loss
sum_{i != j} max(0, x_i - x_j + m) on the predicted IoUs x (averaged over the samples of a step).

Only the LoRA on the IoU head's last layer trains, and nothing upstream of the IoU head depends on
it, so the head's input for every object is recorded once (a forward hook on `iou_head` during a
single decode per image) and training then runs the IoU head alone on those recorded inputs. This
gives exactly the gradients of running the full decoder each step, at a tiny fraction of the cost;
each image is also encoded only once (and kept on disk with an `EmbeddingCache` folder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samrefiner.adapter import IoUAdapter, adapted
from samrefiner.errors import SamRefinerError
from samrefiner.io.images import read_image
from samrefiner.models.base import Encoding, PromptableModel
from samrefiner.prompts import positive_points, tight_boxes
from samrefiner.types import ADAPT_PROMPTS, AdaptPrompt


@dataclass(frozen=True)
class AdaptConfig:
    """SPEC section 5 defaults (the paper's), all settable."""

    rank: int = 4
    alpha: float = 4.0
    margin: float = 0.02
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 5
    epochs: int = 1
    milestones: tuple[int, ...] = (60, 100)
    lr_gamma: float = 0.1
    prompt: AdaptPrompt = "box"
    seed: int = 0


@dataclass(frozen=True)
class AdaptSamples:
    """Per-object training data: the IoU head's recorded input and the target candidate."""

    head_inputs: torch.Tensor  # (N, D) what the IoU head received for each object
    targets: torch.Tensor  # (N,) long: the candidate with the highest IoU against the coarse mask
    columns: slice  # the IoU head's output columns that are the candidates' scores
    skipped: int  # coarse masks left out: empty, or a tie for the highest IoU

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Fit:
    """Ranking loss and top-1 agreement with the coarse-mask IoU over a sample set."""

    loss: float
    agreement: float


@dataclass(frozen=True)
class AdaptResult:
    adapter: IoUAdapter
    before: Fit
    after: Fit
    steps: int
    samples: int


def collect_samples(
    model: PromptableModel,
    items: Iterable[tuple[np.ndarray | str | Path, np.ndarray]],
    prompt: AdaptPrompt = "box",
    encode: Callable[[np.ndarray], Encoding] | None = None,
    progress: bool = False,
) -> AdaptSamples:
    """Encode each image once, decode its coarse masks with `prompt`, record IoU-head inputs and targets.

    `items` yields (image, masks): an H x W x 3 uint8 RGB array or its path, and N x H x W masks.
    `encode` replaces `model.encode`, e.g. `EmbeddingCache(model, folder).encode`.
    """
    if prompt not in ADAPT_PROMPTS:
        raise SamRefinerError(f"unknown prompt type {prompt!r}: choose one of {', '.join(ADAPT_PROMPTS)}")
    encode = encode or model.encode
    inputs, targets, columns, skipped = [], [], None, 0
    for image, masks in tqdm(items, desc="encode", unit="image", disable=not progress):
        image = read_image(image) if isinstance(image, (str, Path)) else image
        masks = np.asarray(masks, dtype=bool)
        keep = masks.any(axis=(1, 2))
        skipped += int((~keep).sum())
        if not keep.any():
            continue
        with torch.no_grad():
            head_in, scores, candidate_ious = _decode_for_training(model, encode(image), masks[keep], prompt)
        columns = columns or _score_columns(head_in.output, scores)
        best = candidate_ious.max(dim=1, keepdim=True).values
        unique_best = (candidate_ious == best).sum(dim=1) == 1
        skipped += int((~unique_best).sum())
        inputs.append(head_in.input[unique_best])
        targets.append(candidate_ious.argmax(dim=1)[unique_best])
    if not targets or sum(len(t) for t in targets) == 0:
        raise SamRefinerError("no usable coarse masks to adapt on (all empty, or no candidate ranked first)")
    return AdaptSamples(torch.cat(inputs), torch.cat(targets).cpu(), columns, skipped)


@dataclass
class _HeadRecord:
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None


def _decode_for_training(
    model: PromptableModel, encoding: Encoding, masks: np.ndarray, prompt: AdaptPrompt
) -> tuple[_HeadRecord, torch.Tensor, torch.Tensor]:
    """Decode `masks`' prompts once: the IoU head's inputs/outputs, the scores, each candidate's coarse IoU."""
    boxes = tight_boxes(masks) if "box" in prompt else None
    points = labels = None
    if "point" in prompt:
        points = positive_points(masks)[:, None, :]
        labels = np.ones(points.shape[:2], dtype=np.int64)
    with _recording(model.iou_head) as record:
        decoded = model.decode(encoding, points, labels, boxes, None)
    if record.input.shape[0] != len(masks):
        raise SamRefinerError(
            f"the model's IoU head saw {record.input.shape[0]} objects for {len(masks)} prompts; cannot adapt it"
        )
    coarse = torch.from_numpy(masks).to(decoded.low_res_logits.device)
    ious = [  # one object at a time: candidates at the original size can be large
        _candidate_ious(model.upscale(logits[None], encoding)[0] > 0, mask)
        for logits, mask in zip(decoded.low_res_logits, coarse)
    ]
    return record, decoded.iou_scores, torch.stack(ious)


def _candidate_ious(candidates: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """(C, H, W) bool candidates vs an (H, W) bool mask -> (C,) IoU."""
    intersection = (candidates & coarse).sum(dim=(1, 2)).double()
    union = (candidates | coarse).sum(dim=(1, 2)).double()
    return intersection / union.clamp(min=1)


@contextmanager
def _recording(head: torch.nn.Module) -> Iterator[_HeadRecord]:
    """Record the inputs and outputs of `head` (flattened to one row per object) over all its calls."""
    record, inputs, outputs = _HeadRecord(), [], []

    def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        inputs.append(args[0].detach().reshape(-1, args[0].shape[-1]))
        outputs.append(output.detach().reshape(-1, output.shape[-1]))

    handle = head.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()
        record.input = torch.cat(inputs) if inputs else torch.empty(0, 0)
        record.output = torch.cat(outputs) if outputs else torch.empty(0, 0)


def _score_columns(head_output: torch.Tensor, scores: torch.Tensor) -> slice:
    """Which contiguous columns of the IoU head's output the decoder returned as candidate scores."""
    count = scores.shape[1]
    for start in range(head_output.shape[1] - count + 1):
        if torch.allclose(head_output[:, start : start + count], scores.to(head_output.dtype), atol=1e-5):
            return slice(start, start + count)
    raise SamRefinerError("the model's candidate IoU scores are not columns of its IoU head's output; cannot adapt it")


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over samples of sum_{i != j} max(0, x_i - x_j + margin), j = target."""
    target_scores = scores.gather(1, targets[:, None])
    hinge = (scores - target_scores + margin).clamp(min=0)
    hinge = hinge.scatter(1, targets[:, None], 0.0)
    return hinge.sum(dim=1).mean()


def predicted_scores(model: PromptableModel, samples: AdaptSamples, adapter: IoUAdapter | None) -> torch.Tensor:
    """(N, C) candidate scores of the recorded objects, with or without the adapter (no gradients)."""
    with adapted(adapter, model), torch.no_grad():
        return _head_scores(model, samples, torch.arange(len(samples)))


def _head_scores(model: PromptableModel, samples: AdaptSamples, rows: torch.Tensor) -> torch.Tensor:
    """The IoU head (as currently hooked) run on the recorded inputs `rows`: (len(rows), C) on the CPU."""
    with _frozen(model.iou_head):
        output = model.iou_head(samples.head_inputs[rows.to(samples.head_inputs.device)])
    return output[:, samples.columns].cpu()


def evaluate(model: PromptableModel, samples: AdaptSamples, adapter: IoUAdapter | None, margin: float) -> Fit:
    scores = predicted_scores(model, samples, adapter)
    agreement = (scores.argmax(dim=1) == samples.targets).double().mean().item()
    return Fit(ranking_loss(scores, samples.targets, margin).item(), agreement)


@contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """Turn off gradients of `module`'s own weights for the block (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def train_adapter(
    model: PromptableModel, samples: AdaptSamples, config: AdaptConfig = AdaptConfig(), progress: bool = True
) -> AdaptResult:
    """Train a fresh adapter on `samples` with SGD + step decay; a progress bar shows the loss."""
    adapter = IoUAdapter.create(model, rank=config.rank, alpha=config.alpha, seed=config.seed)
    before = evaluate(model, samples, None, config.margin)
    optimizer = torch.optim.SGD(
        adapter.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), gamma=config.lr_gamma)
    generator = torch.Generator().manual_seed(config.seed)
    batches_per_epoch = -(-len(samples) // config.batch_size)
    steps = batches_per_epoch * config.epochs
    with tqdm(total=steps, desc="adapt", unit="step", disable=not progress) as bar, adapter.applied(model):
        for _ in range(config.epochs):
            order = torch.randperm(len(samples), generator=generator)
            for batch in order.split(config.batch_size):
                loss = ranking_loss(_head_scores(model, samples, batch), samples.targets[batch], config.margin)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update()
    after = evaluate(model, samples, adapter, config.margin)
    return AdaptResult(adapter, before, after, steps, len(samples))
