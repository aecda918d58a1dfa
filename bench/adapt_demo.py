"""IoU adaption (SAMRefiner++) on DAVIS-2016 frames with DAVIS-585-style coarse masks.

Trains the IoU adapter on the coarse masks alone (no labels; box prompts, SPEC section 5
hyperparameters unless told otherwise) and prints, on that training set, the ranking loss and the
top-1 agreement between SAM's predicted IoU and the IoU against the coarse mask, before and after.
Then it refines every coarse mask with all prompts (one iteration) without and with the adapter
and prints: whether the candidate masks are identical, how often the choice changed, the top-1
selection accuracy against the ground truth and the pooled IoU against the ground truth.

    python3 bench/adapt_demo.py [--model PATH] [--variants 2] [--epochs 1] [--cache out/adapt_demo_cache]

The default model is the small random test SAM, so the ground-truth figures say nothing about
real SAM; the training-set figures show that the adaption learns what it is asked to learn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from samrefiner import Refiner, RefinerConfig, load_model  # noqa: E402
from samrefiner.adapt import AdaptConfig, collect_samples, train_adapter  # noqa: E402
from samrefiner.adapter import IoUAdapter, adapted  # noqa: E402
from samrefiner.embedding_cache import EmbeddingCache  # noqa: E402
from samrefiner.evaluation.corrupt import corrupt_mask, object_rng  # noqa: E402
from samrefiner.io.images import read_image, read_mask  # noqa: E402
from samrefiner.models.base import PromptableModel  # noqa: E402

SHARED = REPO.parent / "shared"
DAVIS = SHARED / "data" / "davis2016"


def davis_frames() -> list[tuple[str, Path, Path]]:
    """(key, image, ground truth) of every annotated DAVIS frame."""
    return [
        (f"{gt.parent.name}/{gt.stem}", DAVIS / "JPEGImages" / gt.parent.name / f"{gt.stem}.jpg", gt)
        for gt in sorted((DAVIS / "Annotations").glob("*/*.png"))
    ]


def coarse_dataset(variants: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, ground truth, `variants` seeded DAVIS-585-style corruptions of it) per frame."""
    data = []
    for key, image_path, gt_path in davis_frames():
        image, gt = read_image(image_path), read_mask(gt_path)
        coarse = [corrupt_mask(image, gt, object_rng(seed + variant, key)).mask for variant in range(variants)]
        data.append((image, gt, np.stack(coarse)))
    return data


def refine_scores(
    model: PromptableModel, encode, data, adapter: IoUAdapter | None
) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray, float]:
    """Refine every coarse mask (all prompts, one iteration): candidate logits per image, chosen
    candidate and the best one against the ground truth per object, pooled IoU with the ground truth."""
    refiner = Refiner(model, RefinerConfig(iterations=1), adapter=adapter)
    logits, chosen, best, intersection, union = [], [], [], 0, 0
    for image, gt, coarse in data:
        encoding = encode(image)
        result = refiner.refine_encoded(encoding, coarse)
        prompts = result.prompts
        with adapted(adapter, model):
            decoded = model.decode(
                encoding,
                prompts.points.astype(np.float32),
                prompts.labels,
                prompts.boxes.astype(np.float32),
                torch.from_numpy(prompts.mask_inputs),
            )
        candidates = (model.upscale(decoded.low_res_logits, encoding) > 0).numpy()
        gt_ious = [[(c & gt).sum() / max((c | gt).sum(), 1) for c in group] for group in candidates]
        logits.append(decoded.low_res_logits)
        chosen.extend(result.chosen)
        best.extend(int(np.argmax(row)) for row in gt_ious)
        intersection += int(np.logical_and(result.masks, gt).sum())
        union += int(np.logical_or(result.masks, gt).sum())
    return logits, np.array(chosen), np.array(best), intersection / union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(SHARED / "fixtures" / "sam_reference" / "reduced_sam.pth"))
    parser.add_argument("--variants", type=int, default=2, help="coarse masks per frame (seeded corruptions)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=REPO / "out" / "adapt_demo_cache")
    args = parser.parse_args()

    model = load_model(args.model)
    encode = EmbeddingCache(model, args.cache).encode
    data = coarse_dataset(args.variants, args.seed)
    samples = collect_samples(model, [(image, coarse) for image, _, coarse in data], encode=encode, progress=True)
    result = train_adapter(model, samples, AdaptConfig(epochs=args.epochs, seed=args.seed))
    print(
        f"training set: {len(data)} DAVIS frames, {result.samples} coarse masks ({samples.skipped} skipped), "
        f"{result.steps} steps"
    )
    print(f"ranking loss:                              {result.before.loss:.4f} -> {result.after.loss:.4f}")
    print(f"top-1 agreement with coarse-mask IoU:      {result.before.agreement:.1%} -> {result.after.agreement:.1%}")

    plain_logits, plain_chosen, best, plain_iou = refine_scores(model, encode, data, None)
    adapted_logits, adapted_chosen, _, adapted_iou = refine_scores(model, encode, data, result.adapter)
    identical = all(torch.equal(a, b) for a, b in zip(plain_logits, adapted_logits))
    print("refinement with all prompts, 1 iteration (SAMRefiner -> SAMRefiner++):")
    print(f"candidate masks identical:                 {identical}")
    print(f"choice changed:                            {np.mean(plain_chosen != adapted_chosen):.1%} of objects")
    print(
        f"top-1 selection accuracy vs ground truth:  {np.mean(plain_chosen == best):.1%} -> "
        f"{np.mean(adapted_chosen == best):.1%}"
    )
    print(f"pooled IoU vs ground truth:                {plain_iou:.4f} -> {adapted_iou:.4f}")


if __name__ == "__main__":
    main()
