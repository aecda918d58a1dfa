"""bf16 autocast on a CPU: how far the refined masks move from fp32, and what it saves.

    python3 bench/cpu_precision.py                       # lite_medsam (real weights) and MobileSAM
    python3 bench/cpu_precision.py --models lite_medsam --dataset davis2016 --limit 10

For each model, the same images and coarse masks (made from the ground truth with `corrupt
--seed 0`, as `samrefiner bench --seed 0` makes them) are refined twice, with `--precision fp32`
and `--precision bf16` (the default 5 iterations, every prompt): per object the share of pixels
where the two refined masks agree, the IoU of each with the ground truth (meaningful only for
trained weights: lite_medsam), and the seconds per image of each. `mobile_sam` is the reduced
random-weight MobileSAM of the test fixtures (its agreement is a pessimistic stand-in: random
weights amplify rounding). bf16 is fast only on CPUs with bf16 instructions (AVX512-BF16, AMX).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from samrefiner import Refiner, RefinerConfig, load_model  # noqa: E402
from samrefiner.evaluation.bench import labelled_images  # noqa: E402
from samrefiner.evaluation.metrics import mask_iou  # noqa: E402

SHARED = REPO.parent / "shared"
MODELS = {
    "lite_medsam": "lite_medsam",
    "mobile_sam": str(SHARED / "fixtures" / "mobilesam_reference" / "reduced_mobile_sam.pth"),
}
DATASETS = {"grabcut": ("images", "gt"), "davis2016": ("JPEGImages", "Annotations")}


def refine_all(spec: str, precision: str, items: list) -> tuple[list[np.ndarray], float]:
    """Every item's refined masks with the model under `precision`, and the seconds per image."""
    model = load_model(spec)
    model.speed_up(precision)
    refiner = Refiner(model, RefinerConfig())
    refiner.refine(items[0].image, items[0].coarse)  # warm-up
    started = time.perf_counter()
    masks = [refiner.refine(item.image, item.coarse).masks for item in items]
    return masks, (time.perf_counter() - started) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lite_medsam,mobile_sam")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="grabcut")
    parser.add_argument("--limit", type=int, default=6, help="images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, gt = DATASETS[args.dataset]
    root = SHARED / "data" / args.dataset
    items = [
        item
        for item in labelled_images(root / images, root / gt, seed=0, limit=args.limit)
        if not isinstance(item, Exception)
    ]
    for name in args.models.split(","):
        fp32, fp32_seconds = refine_all(MODELS[name], "fp32", items)
        bf16, bf16_seconds = refine_all(MODELS[name], "bf16", items)
        agreement, iou32, iou16 = [], [], []
        for item, ours32, ours16 in zip(items, fp32, bf16):
            for index, truth in enumerate(item.gt):
                agreement.append(float((ours32[index] == ours16[index]).mean()))
                void = item.void[index]
                iou32.append(mask_iou(truth, ours32[index], void))
                iou16.append(mask_iou(truth, ours16[index], void))
        print(f"{name} on {args.dataset} ({len(items)} images, {len(agreement)} objects, {args.threads} threads):")
        print(f"  fp32 vs bf16 pixel agreement per object: worst {min(agreement):.4%}, mean {np.mean(agreement):.4%}")
        print(f"  mean IoU with the ground truth: fp32 {np.mean(iou32):.4f}, bf16 {np.mean(iou16):.4f}")
        print(f"  seconds per image: fp32 {fp32_seconds:.2f}, bf16 {bf16_seconds:.2f}")


if __name__ == "__main__":
    main()
