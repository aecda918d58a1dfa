"""Prompt mining against decoding, per object, for one image with 50 objects (reduced SAM, CPU).

The objects are 50 real DAVIS-2016 ground-truth masks (the first six annotated frames of each of
the ten sequences, the first 50 of those; all 854 x 480), refined on the first frame of `dog`. Prints the
median time per
object of: mining (default prompts, and with CEBox lambda = 0.1), one decoder pass, upscaling the
chosen masks, and the whole five-iteration refinement with each stage's share.

    python3 bench/prompt_vs_decode.py [--repeats 3] [--model PATH] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from samrefiner import Refiner, RefinerConfig, load_model  # noqa: E402
from samrefiner.io.images import read_image, read_mask  # noqa: E402
from samrefiner.prompts import PromptMiner  # noqa: E402
from samrefiner.refine import as_masks  # noqa: E402

SHARED = REPO.parent / "shared"
DAVIS = SHARED / "data" / "davis2016"
MODEL = SHARED / "fixtures" / "sam_reference" / "reduced_sam.pth"
OBJECTS = 50


def fifty_objects() -> tuple[np.ndarray, np.ndarray]:
    """The dog frame and 50 real object masks of the same size."""
    image = read_image(DAVIS / "JPEGImages" / "dog" / "00010.jpg")
    paths = [path for folder in sorted((DAVIS / "Annotations").iterdir()) for path in sorted(folder.glob("*.png"))[:6]]
    masks = as_masks([read_mask(path) for path in paths[:OBJECTS]], image.shape[:2], str(DAVIS))
    assert len(masks) == OBJECTS, f"found {len(masks)} masks under {DAVIS}"
    return image, masks


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Timed:
    """Wraps a model: accumulates the seconds spent in decode and upscale."""

    def __init__(self, model) -> None:
        self.model, self.seconds = model, {"decode": 0.0, "upscale": 0.0}

    def __getattr__(self, name):
        return getattr(self.model, name)

    def decode(self, *args, **kwargs):
        return self._timed("decode", self.model.decode, *args, **kwargs)

    def upscale(self, *args, **kwargs):
        return self._timed("upscale", self.model.upscale, *args, **kwargs)

    def _timed(self, stage, call, *args, **kwargs):
        start = time.perf_counter()
        result = call(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - start
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image, masks = fifty_objects()
    model = load_model(args.model)
    encoding = model.encode(image)
    print(
        f"image {image.shape[1]}x{image.shape[0]}, {len(masks)} objects, {args.threads} torch "
        f"threads, model {args.model}"
    )

    def miner(threshold: float) -> PromptMiner:
        return PromptMiner(
            encoding.original_size, encoding.input_size, encoding.embeddings, box_expand_threshold=threshold
        )

    mining = median_seconds(lambda: miner(0.0).mine(masks), args.repeats) / OBJECTS
    mining_cebox = median_seconds(lambda: miner(0.1).mine(masks), args.repeats) / OBJECTS
    prompts = miner(0.0).mine(masks)
    decode_args = (prompts.points.astype(np.float32), prompts.labels, prompts.boxes.astype(np.float32))
    mask_inputs = torch.from_numpy(prompts.mask_inputs)
    decoded = model.decode(encoding, *decode_args, mask_inputs)
    decoding = median_seconds(lambda: model.decode(encoding, *decode_args, mask_inputs), args.repeats) / OBJECTS
    chosen = decoded.low_res_logits[torch.arange(OBJECTS), decoded.iou_scores.argmax(dim=1)][:, None]
    upscaling = median_seconds(lambda: model.upscale(chosen, encoding), args.repeats) / OBJECTS

    print(f"prompt mining           {1000 * mining:8.2f} ms/object  (lambda 0.1: {1000 * mining_cebox:.2f} ms/object)")
    print(f"decoder (one pass)      {1000 * decoding:8.2f} ms/object")
    print(f"upscale chosen mask     {1000 * upscaling:8.2f} ms/object")
    print(f"mining / decoding       {mining / decoding:8.1%}")

    timed = Timed(model)
    start = time.perf_counter()
    Refiner(timed, RefinerConfig(iterations=5)).refine_encoded(encoding, masks)
    total = time.perf_counter() - start
    other = total - sum(timed.seconds.values())
    shares = ", ".join(f"{stage} {seconds / total:.0%}" for stage, seconds in timed.seconds.items())
    print(
        f"5-iteration refine      {total / OBJECTS:8.3f} s/object  ({shares}, mining and the rest {other / total:.0%})"
    )


if __name__ == "__main__":
    main()
