"""How many threads a process keeps busy beside the model: the CPUs it may use, shared among the
processes of its node.

Prompt mining runs on CPU threads while the GPU works. torch's thread count is no guide: torchrun
sets OMP_NUM_THREADS=1 in every process it starts (when unset), which would leave mining on one
thread per GPU. So the count comes from the CPUs this process may run on (its affinity: what a
container, `taskset` or a SLURM allocation gives it), divided among the processes torchrun started
on this node (LOCAL_WORLD_SIZE); SAMREFINER_MINING_THREADS sets it outright.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from samrefiner.errors import InputError

THREADS_VARIABLE = "SAMREFINER_MINING_THREADS"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), or all of them where affinity is unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def mining_threads(environ: Mapping[str, str] = os.environ) -> int:
    """Threads for prompt mining in this process: SAMREFINER_MINING_THREADS when set, else this
    process's share of its CPUs (`usable_cpus() // LOCAL_WORLD_SIZE`), at least 1."""
    if environ.get(THREADS_VARIABLE, "").strip():
        return _whole_number(environ, THREADS_VARIABLE, "prompt-mining threads")
    processes = 1
    if "LOCAL_WORLD_SIZE" in environ:
        processes = _whole_number(environ, "LOCAL_WORLD_SIZE", "processes on this node")
    return max(1, usable_cpus() // processes)


def _whole_number(environ: Mapping[str, str], name: str, what: str) -> int:
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{name}={text!r}: the number of {what} must be a whole number >= 1")
    return value
