"""What prompt mining costs per image of the `throughput.py --cpu-side` job, and its floor.

    python3 bench/mining_cost.py [--images 6] [--repeats 3]

Runs the COCO-like job of `throughput.py --cpu-side` (the 7 largest regions of each coco_stuff
map, 5 iterations) and the high-resolution photo (CascadePSP's aeroplane, one object, 5
iterations) once each with each model of `throughput.cpu_side_models` (the reduced SAM with random
weights; LiteMedSAM's trained weights when installed), keeping the masks that every mining call
received. Then, with nothing else in the process running, it mines them again with new miners
(one per image, as in a run: nothing kept from earlier mining), one call at a time, and prints
the CPU ms per image (best of `--repeats`; OpenCV keeps its own threads) of:

- mining as a whole (the prompts of every object in every iteration);
- OpenCV's exact transform of each object's crop alone (its box and a one-pixel ring: the positive
  point and the mask prompt's Gaussian need it whole, so any miner that takes exact distances
  from OpenCV spends at least this);
- OpenCV's 5 x 5 chamfer transform of each object's box alone (the negative point's bound).
The rest is the negative point's exact distances, the mask prompt and bookkeeping. The trained
model's masks are also mined with SAM's prompt geometry (1024 input frame, 256 mask grid: ViT-H's),
as a GPU run with SAM would mine them.

Mining threads share one interpreter: what holds Python's lock (GIL) runs one thread at a time.
Last, the COCO-like masks are mined twice over, on one thread and on two at once (OpenCV on one
thread), and the wall times give the share of mining that holds the lock, s (two threads are
1 / (s + (1 - s) / 2) times as fast as one): more threads cannot make one process mine more than
1 / s times as fast as one thread. It needs two idle cores.

Then the negative point's search (`distances.first_farthest`) on hostile backgrounds, where many
pixels tie among many mask pixels (checkerboards, stripes, dithering): CPU seconds of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import samrefiner.refine as refine_module  # noqa: E402
from samrefiner import PromptableModel, Refiner, RefinerConfig  # noqa: E402
from samrefiner.distances import first_farthest  # noqa: E402
from samrefiner.io.coco import CocoDataset  # noqa: E402
from samrefiner.io.images import read_image, read_mask  # noqa: E402
from samrefiner.models.sam import resized_size  # noqa: E402
from samrefiner.prompts import SAM_GEOMETRY, Geometry, PromptMiner, bounding_box  # noqa: E402
from samrefiner.run.loader import load_in_order  # noqa: E402
from samrefiner.run.runner import run  # noqa: E402
from throughput import CASCADEPSP, COCO_STUFF, coco_like, cpu_side_models  # noqa: E402

Calls = list[tuple[PromptMiner, np.ndarray]]


def recorded_calls(job: Callable[[], object]) -> Calls:
    """Every (miner, masks) that mining received while `job` ran."""
    calls: Calls = []
    mine = refine_module.mine_in_threads

    def recording(miner: PromptMiner, masks: np.ndarray, workers: int | None = None):
        calls.append((miner, masks.copy()))
        return mine(miner, masks, workers)

    refine_module.mine_in_threads = recording
    try:
        job()
    finally:
        refine_module.mine_in_threads = mine
    return calls


def crop_transforms(masks: np.ndarray) -> None:
    """OpenCV's exact transform of each mask's crop (its box and a one-pixel ring)."""
    for mask in masks:
        if (box := bounding_box(mask)) is not None:
            x1, y1, x2, y2 = box
            crop = mask[max(y1 - 1, 0) : y2 + 2, max(x1 - 1, 0) : x2 + 2]
            cv2.distanceTransform(crop.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def box_bounds(masks: np.ndarray) -> None:
    """OpenCV's 5 x 5 chamfer transform of each mask's background in its box."""
    for mask in masks:
        if (box := bounding_box(mask)) is not None:
            x1, y1, x2, y2 = box
            background = (~mask[y1 : y2 + 1, x1 : x2 + 1]).view(np.uint8)
            cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_5)


def fresh(calls: Calls, geometry: Geometry | None = None) -> Calls:
    """The same masks with new miners (nothing kept from earlier mining, as in a run, where each
    image has its own; one per image here too), set up as the recorded ones, in `geometry` when
    given (SAM's: its 1024 input frame and 256 mask grid, as ViT-B/L/H would mine them)."""
    miners: dict[int, PromptMiner] = {}
    renewed = []
    for miner, masks in calls:
        if id(miner) not in miners:
            if miner.similarity is not None:
                raise ValueError("CEBox needs the model's own embeddings")
            height, width = miner.original_size
            input_size = miner.input_size if geometry is None else resized_size(height, width, geometry.image_size)
            miners[id(miner)] = PromptMiner(
                miner.original_size,
                input_size,
                use_negative_point=miner.use_negative_point,
                use_mask=miner.grid is not None,
                gamma=miner.gamma,
                strength=miner.strength,
                point_strategy=miner.point_strategy,
                geometry=miner.geometry if geometry is None else geometry,
            )
        renewed.append((miners[id(miner)], masks))
    return renewed


def cpu_ms(calls: Calls, work: Callable[[PromptMiner, np.ndarray], object], repeats: int) -> float:
    """The least CPU ms that `work` took over all calls (with new miners each time), of `repeats` tries."""
    best = float("inf")
    for _ in range(repeats):
        renewed = fresh(calls)
        start = time.process_time()
        for miner, masks in renewed:
            work(miner, masks)
        best = min(best, time.process_time() - start)
    return best * 1000


def report(name: str, calls: Calls, images: int, repeats: int) -> None:
    mined = cpu_ms(calls, lambda miner, masks: miner.mine(masks), repeats) / images
    crops = cpu_ms(calls, lambda miner, masks: crop_transforms(masks), repeats) / images
    boxes = cpu_ms(calls, lambda miner, masks: box_bounds(masks), repeats) / images
    objects = sum(len(masks) for _, masks in calls)
    print(
        f"{name}: {objects / images:.1f} objects mined per image (all iterations); CPU ms per image: mining "
        f"{mined:.0f}; of it the exact transforms of the crops alone {crops:.0f} ({crops / mined:.0%}) and the "
        f"chamfer bounds {boxes:.0f} ({boxes / mined:.0%})"
    )


def locked_share(calls: Calls, repeats: int) -> tuple[float, float, float]:
    """Wall seconds of mining every call twice on one thread, and on two threads at once (each all
    calls), with OpenCV on one thread (best of `repeats`); and the share of mining that holds the
    GIL they imply."""

    def mine_all() -> None:
        for miner, masks in calls:
            miner.mine(masks)

    def twice_on_one() -> None:
        mine_all()
        mine_all()

    def once_on_each_of_two() -> None:
        pair = [threading.Thread(target=mine_all) for _ in range(2)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        mine_all()  # warm-up
        one = min(wall_seconds(twice_on_one) for _ in range(repeats))
        two = min(wall_seconds(once_on_each_of_two) for _ in range(repeats))
    finally:
        cv2.setNumThreads(threads)
    return one, two, min(max(2 * two / one - 1, 0.0), 1.0)


def wall_seconds(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def model_cost(name: str, model: PromptableModel, args: argparse.Namespace) -> None:
    """The reports of one model's COCO-like job and aeroplane."""
    refiner = Refiner(model, RefinerConfig(iterations=5))
    with tempfile.TemporaryDirectory() as work:
        coco = coco_like(Path(work), args.images)
        dataset = CocoDataset(COCO_STUFF / "imgs", coco, Path(work) / "refined.json")
        calls = recorded_calls(lambda: run(dataset, refiner, progress=False, loader=load_in_order))
    image, mask = read_image(CASCADEPSP / "aeroplane.jpg"), read_mask(CASCADEPSP / "aeroplane.png")
    photo = recorded_calls(lambda: refiner.refine(image, mask[None]))
    print(f"== {name}")
    report(f"COCO-like job ({args.images} images)", calls, args.images, args.repeats)
    report("aeroplane.jpg (3492 x 2328, one object)", photo, 1, args.repeats)
    if Geometry.of(refiner.model) != SAM_GEOMETRY:
        sam_calls, sam_photo = fresh(calls, SAM_GEOMETRY), fresh(photo, SAM_GEOMETRY)
        report("  its COCO-like masks, SAM's geometry", sam_calls, args.images, args.repeats)
        report("  its aeroplane masks, SAM's geometry", sam_photo, 1, args.repeats)
    one, two, share = locked_share(calls, args.repeats)
    print(
        f"COCO-like masks mined twice: {one:.2f} s on one thread, {two:.2f} s on two ({one / two:.2f}x); "
        f"share holding the GIL {share:.0%} (anything else that slows the two threads counts too: it needs "
        f"two idle cores), so one process mines at most {1 / max(share, 1e-9):.1f}x as fast as one thread "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})"
    )


def hostile_backgrounds() -> dict[str, np.ndarray]:
    """Backgrounds (True) of a box where the negative point's candidates are many among many mask pixels."""
    rows, cols = np.indices((1024, 1024))
    stripes4, stripes8, grid3 = (np.ones((1024, 1024), bool) for _ in range(3))
    stripes4[:, ::4] = stripes4[:, -1] = False
    stripes8[:, ::8] = stripes8[:, -1] = False
    grid3[::3, ::3] = False
    bands = np.random.default_rng(0).random((1000, 3000)) < 0.5
    bands[50:951] = True
    bands[[49, 951]] = False
    rectangle = np.zeros((220, 720), bool)
    rectangle[10:-10, 10:-10] = True
    return {
        "checkerboard 1024 x 1024": (rows + cols) % 2 == 0,
        "stripes every 4 px, 1024 x 1024": stripes4,
        "stripes every 8 px, 1024 x 1024": stripes8,
        "a mask pixel every 3 px, 1024 x 1024": grid3,
        "a 900-row strip between noisy bands, 1000 x 3000": bands,
        "a 200 x 700 rectangle": rectangle,
    }


def hostile_cost() -> None:
    """CPU seconds of the negative point's search on each hostile background."""
    print("== the negative point's search on hostile backgrounds (CPU s)")
    for name, background in hostile_backgrounds().items():
        start = time.process_time()
        first_farthest(background, *background.shape)
        print(f"{name}: {time.process_time() - start:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="coco_stuff images (at most 6)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, model in cpu_side_models():
        model_cost(name, model, args)
    hostile_cost()


if __name__ == "__main__":
    sys.exit(main())
