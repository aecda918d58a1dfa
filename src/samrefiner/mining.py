"""Prompt mining on several CPU threads: the cores the model uses are idle while prompts are mined.

Objects are mined independently of each other, so mining them in any grouping gives the same
prompts; OpenCV and NumPy release the GIL for the distance transforms and array work that dominate.
The "random" point strategy draws from one generator in object order, so it stays in one thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from samrefiner.cpus import mining_threads
from samrefiner.prompts import PromptMiner, Prompts

_PIXELS_IN_FLIGHT = 1 << 24  # image pixels mined at once over all threads (~0.5 GB of distance maps)


def mine_in_threads(miner: PromptMiner, masks: np.ndarray, workers: int | None = None) -> Prompts:
    """`miner.mine(masks)`, one object per task on `workers` threads (default: `cpus.mining_threads()`;
    fewer on large images, where one object's distance maps take ~30 bytes per pixel)."""
    workers = mining_threads() if workers is None else workers
    workers = min(workers, max(1, _PIXELS_IN_FLIGHT // max(masks[0].size if len(masks) else 1, 1)))
    if workers <= 1 or len(masks) < 2 or miner.point_strategy == "random":
        return miner.mine(masks)
    with ThreadPoolExecutor(min(workers, len(masks)), thread_name_prefix="samrefiner-mine") as pool:
        parts = list(pool.map(miner.mine, (masks[index : index + 1] for index in range(len(masks)))))
    return concatenate(parts)


def concatenate(parts: list[Prompts]) -> Prompts:
    """The prompts of several groups of objects, in order, as one `Prompts`."""
    masks = None if parts[0].mask_inputs is None else np.concatenate([part.mask_inputs for part in parts])
    return Prompts(
        np.concatenate([part.points for part in parts]),
        np.concatenate([part.labels for part in parts]),
        np.concatenate([part.boxes for part in parts]),
        np.concatenate([part.box_expanded for part in parts]),
        masks,
    )
