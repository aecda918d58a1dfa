"""Prompt mining's threads follow the CPUs a process may use (its affinity, shared among torchrun's
processes on the node), not torch's thread count, which torchrun sets to one."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from conftest import DATA
from samrefiner.cpus import mining_threads
from samrefiner.errors import InputError
from samrefiner.mining import mine_in_threads
from samrefiner.prompts import PromptMiner


@pytest.fixture()
def eight_cpus(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)


def test_threads_are_the_process_share_of_its_cpus(eight_cpus) -> None:
    assert mining_threads({}) == 8
    assert mining_threads({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}) == 4
    assert mining_threads({"LOCAL_WORLD_SIZE": "16"}) == 1  # more processes than CPUs: still one each
    assert mining_threads({"LOCAL_WORLD_SIZE": "2", "SAMREFINER_MINING_THREADS": "3"}) == 3
    for bad in ({"SAMREFINER_MINING_THREADS": "0"}, {"SAMREFINER_MINING_THREADS": "many"}, {"LOCAL_WORLD_SIZE": "x"}):
        with pytest.raises(InputError, match="must be a whole number >= 1"):
            mining_threads(bad)


def test_under_torchrun_mining_runs_on_several_threads(eight_cpus, monkeypatch) -> None:
    """A torchrun process (OMP_NUM_THREADS=1: torch has one thread) that may use 8 CPUs, with one
    other process on its node: the first two objects are mined at the same time (each waits for the
    other at a barrier, which one thread alone never passes)."""
    from samrefiner.io.labelmaps import read_label_map
    from samrefiner.regions import split_then_merge

    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SAMREFINER_MINING_THREADS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        label_map, _ = read_label_map(DATA / "coco_stuff" / "pngs" / "3.png")
        masks = np.stack([mask for _, mask in split_then_merge(label_map)])
        miner = PromptMiner(masks.shape[1:], (683, 1024))
        expected = miner.mine(masks)
        meeting, calls, callers = threading.Barrier(2, timeout=5), itertools.count(), set()
        mine = miner.mine

        def mine_together(part: np.ndarray):
            callers.add(threading.current_thread().name)
            if next(calls) < 2:
                meeting.wait()  # BrokenBarrierError after 5 s when no second thread comes
            return mine(part)

        miner.mine = mine_together
        got = mine_in_threads(miner, masks)
    finally:
        torch.set_num_threads(threads)
    assert len(masks) >= 4 and len(callers) > 1
    for field in ("points", "labels", "boxes", "box_expanded", "mask_inputs"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
