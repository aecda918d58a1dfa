"""`samrefiner refine` under torchrun: one process per GPU (or per CPU slot), on any number of nodes.

    torchrun --nproc-per-node 4 -m samrefiner refine --model vit_h --images ... --out ...
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m samrefiner refine ...

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. Each rank refines its share of the selected images
(every WORLD_SIZE-th image of the --shard/--limit selection, from the RANK-th) on its own GPU
(cuda:LOCAL_RANK), writing each image's outputs and resume record atomically, exactly as a
single-process run does. After all ranks are done, rank 0 merges the records into the one output
(COCO JSON, scores file) and the ranks' failures into one errors file in dataset order, so the
output is the one a single process would leave. The output must be on a file system every rank
sees. The process group (gloo) carries only a barrier and the ranks' summaries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samrefiner.errors import DeviceError, InputError
from samrefiner.io.datasets import Dataset
from samrefiner.io.images import announcing_writes
from samrefiner.run.failures import write_errors
from samrefiner.run.manifest import Journal, RunConflict, check_same, claim
from samrefiner.run.merge import merge_outputs
from samrefiner.run.runner import RunOptions, run
from samrefiner.run.shards import Shard, shard_path
from samrefiner.run.summary import Summary

if TYPE_CHECKING:
    import torch

# A rank may wait at the final barrier for the slowest one (uneven images): allow long runs.
BARRIER_TIMEOUT = timedelta(hours=72)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ranks:
        """From torchrun's RANK, WORLD_SIZE and LOCAL_RANK (a single process when they are unset)."""
        try:
            world = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (as torchrun sets them)") from None
        if world < 1 or not 0 <= rank < world or local_rank < 0:
            raise InputError(f"RANK {rank} / WORLD_SIZE {world}: need 0 <= RANK < WORLD_SIZE")
        return cls(rank, world, local_rank)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, shard: Shard) -> Shard:
        """This rank's part of `shard`: refs[K::N][r::W] is refs[K + N r :: N W]."""
        return Shard(shard.index + shard.count * self.rank, shard.count * self.world)

    def limit(self, limit: int | None) -> int | None:
        """This rank's part of the first `limit` images of the shard (r, r + W, ... below limit)."""
        return None if limit is None else max(0, -(-(limit - self.rank) // self.world))

    def device(self, device: str, cuda_available: bool) -> str:
        """ "auto" -> cuda when present, else cpu; plain "cuda" under torchrun -> this rank's GPU."""
        if device == "auto":
            device = "cuda" if cuda_available else "cpu"
        return f"cuda:{self.local_rank}" if device == "cuda" and self.distributed else device


def process_device(requested: str, ranks: Ranks, name: str = "device") -> torch.device:
    """The device this process runs on, with its index: `requested` ("auto", "cuda", "cuda:K", "cpu",
    ...) as `Ranks.device` places it, checked against this machine (DeviceError, one line starting
    with `name` and `requested`). Outside torchrun plain "cuda" is the current device (cuda:0 unless
    set); under torchrun it is cuda:LOCAL_RANK, and a LOCAL_RANK beyond the machine's GPUs is refused
    (processes share a GPU only when the device names it)."""
    import torch

    from samrefiner.models.device import check_device

    placed = ranks.device(requested, torch.cuda.is_available())
    if placed != requested and placed.startswith("cuda:"):  # this rank's own GPU
        count = torch.cuda.device_count()
        if ranks.local_rank >= count:
            raise DeviceError(
                f"{name} {requested}: torchrun process LOCAL_RANK {ranks.local_rank} has no GPU of its own: "
                f"this machine has {count} CUDA device(s), so start at most {count} processes per node "
                "(or name one device, cuda:N, for the processes to share)"
            )
    return check_device(placed, name=name)


def run_ranks(
    dataset: Dataset, refiner: Any, ranks: Ranks, options: RunOptions | None = None, **fields: Any
) -> Summary:
    """`runner.run` for this rank's images, then one merged output; the summary of all ranks.

    `options.limit`: the first `limit` images of the `shard` selection, split across the ranks. The
    errors file (given or default) gets the shard's suffix, so shards writing one output keep their
    own. Rank 0 claims the output with `manifest` (resume, overwrite), the other ranks check it; when
    one rank stops (failure policy) the others stop after their current image. `fields`: RunOptions
    fields to replace. Call from every rank.
    """
    options = replace(options or RunOptions(), **fields)
    final_errors = shard_path(options.errors_path or dataset.layout.errors_path, options.shard)
    if not ranks.distributed:
        return run(dataset, refiner, options, errors_path=final_errors)
    import torch.distributed as dist

    shard = options.shard
    stop_flag = dataset.layout.work_dir / f"stop{shard.suffix}"
    rank_suffix = f".rank-{ranks.rank}-of-{ranks.world}"
    with _process_group():
        _claim_on_rank_zero(dataset, ranks, options.manifest, options.resume, options.overwrite, stop_flag)
        own = run(
            dataset,
            refiner,
            options,
            shard=ranks.shard(shard),
            limit=ranks.limit(options.limit),
            errors_path=final_errors.with_name(f"{final_errors.name}{rank_suffix}"),
            progress=options.progress and ranks.rank == 0,
            merge=False,
            stop_flag=stop_flag,
            manifest=None,
        )
        summaries: list[Summary | None] = [None] * ranks.world
        dist.all_gather_object(summaries, own)  # every rank is done refining past this point
        if own.errors_path is not None:
            own.errors_path.unlink(missing_ok=True)
        total = combine([summary for summary in summaries if summary is not None], dataset, final_errors)
        if ranks.rank == 0:
            with announcing_writes(Journal(dataset.layout, shard.suffix + rank_suffix).add):
                merge_outputs(dataset)
                write_errors(final_errors, total.failed)
            stop_flag.unlink(missing_ok=True)
        dist.barrier()  # the merged output is complete when any rank returns
    return total


def _claim_on_rank_zero(
    dataset: Dataset, ranks: Ranks, manifest: dict[str, Any] | None, resume: bool, overwrite: bool, stop_flag: Path
) -> None:
    """Rank 0 claims the output (and clears an old stop flag), then the other ranks check their
    manifest against it. A refusal on any rank reaches every rank: all stop with the same line."""
    refusal = None
    if ranks.rank == 0:
        try:
            if manifest is not None:
                claim(dataset.layout, manifest, resume=resume, overwrite=overwrite)
            stop_flag.unlink(missing_ok=True)
        except InputError as error:
            refusal = (str(error), getattr(error, "kind", None))
    _raise_on_every_rank(refusal, ranks)
    if ranks.rank > 0 and manifest is not None:
        try:
            check_same(dataset.layout, manifest)
        except InputError as error:
            refusal = (str(error), None)
    _raise_on_every_rank(refusal, ranks)


def _raise_on_every_rank(refusal: tuple[str, str | None] | None, ranks: Ranks) -> None:
    """On every rank, the first rank's refusal (message, RunConflict kind or None), when any rank has one."""
    import torch.distributed as dist

    refusals: list[tuple[str, str | None] | None] = [None] * ranks.world
    dist.all_gather_object(refusals, refusal)
    first = next((found for found in refusals if found is not None), None)
    if first is not None:
        text, kind = first
        raise InputError(text) if kind is None else RunConflict(text, kind)


def combine(summaries: list[Summary], dataset: Dataset, errors_path: Path) -> Summary:
    """One summary for the whole run: counts added, the slowest rank's time, failures in dataset order,
    the first cause of a stop."""
    order = {ref.key: index for index, ref in enumerate(dataset.refs())}
    failed = sorted((entry for summary in summaries for entry in summary.failed), key=lambda entry: order[entry[0]])
    return Summary(
        images=sum(summary.images for summary in summaries),
        objects=sum(summary.objects for summary in summaries),
        empty_inputs=sum(summary.empty_inputs for summary in summaries),
        empty_outputs=sum(summary.empty_outputs for summary in summaries),
        failures=len(failed),
        skipped=sum(summary.skipped for summary in summaries),
        seconds=max(summary.seconds for summary in summaries),
        errors_path=errors_path,
        failed=failed,
        stopped=next((summary.stopped for summary in summaries if summary.stopped), None),
        changed=[change for summary in summaries for change in summary.changed],
    )


@contextmanager
def _process_group() -> Iterator[None]:
    """A gloo process group from torchrun's environment (an existing one is used as it is)."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()
