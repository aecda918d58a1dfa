"""A whole refine run over a dataset: what identifies it (for the run's manifest) and the run
itself, with its readers and writers (worker processes, or a thread) and its stage timings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from samrefiner.run.manifest import file_fields, settings_fields
from samrefiner.run.runner import RunOptions
from samrefiner.run.summary import Summary


def identity_fields(
    sources: dict[str, Path | None], options: RunOptions, config_values: dict[str, Any], **settings: Any
) -> dict[str, Any]:
    """What decides the output besides the model (samrefiner.run.manifest), checked against an earlier
    run in the output before the model loads: the inputs (paths, and digests of the files that are one
    input of the whole run), the dataset settings, the selection and the refinement settings."""
    yolo = sources.get("yolo")
    return {
        **sources,
        **settings,
        "limit": options.limit,
        "shards": options.shard.count,
        **settings_fields(config_values),
        **file_fields(coco=sources.get("coco"), yolo_data_yaml=yolo / "data.yaml" if yolo else None),
    }


def refine_dataset(dataset: Any, refiner: Any, ranks: Any, options: RunOptions, workers: int) -> Summary:
    """Run (every rank), reading and writing in `workers` processes or a thread; the summary carries
    this process's idle shares (rank 0's under torchrun)."""
    from samrefiner.run.distributed import run_ranks
    from samrefiner.run.loader import Workers, load_in_background
    from samrefiner.run.overlap import refine_overlapped
    from samrefiner.run.runner import refine_in_order
    from samrefiner.run.writes import InlineWrites
    from samrefiner.timing import StageTimes, idle_shares, recording

    pool = Workers(dataset, workers) if workers else None
    if pool:
        options = replace(options, loader=pool.loader, writer=pool.writer, refining=refine_overlapped)
    else:
        options = replace(options, loader=load_in_background, writer=InlineWrites, refining=refine_in_order)
    times = StageTimes(stage_synchronizer(refiner))
    start = time.perf_counter()
    try:
        with recording(times):
            summary = run_ranks(dataset, refiner, ranks, options)
    finally:
        if pool:
            pool.close()
    summary.idle = idle_shares(times, time.perf_counter() - start)
    return summary


def stage_synchronizer(refiner: Any) -> Callable[[], None] | None:
    """torch.cuda.synchronize of the model's GPU when it runs on CUDA (model stages then time its work)."""
    from samrefiner.models.device import cuda_device, synchronizer

    return synchronizer(cuda_device(refiner.model))
