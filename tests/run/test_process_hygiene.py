"""Processes of a `refine --workers 2` run: a kill -9 of the main process leaves none of them alive
(workers, multiprocessing's resource tracker), and Ctrl-C prints one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_io_runner import make_dataset

from conftest import REPO, SAM_REF

IMAGES = 150  # enough for the run to last well past the workers' start


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process (Linux /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    table = process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie is dead; it only waits to be reaped)."""
    table = process_table()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def start_run(tmp_path: Path, ready: str) -> tuple[subprocess.Popen, set[int]]:
    """`samrefiner refine --workers 2` in its own process group; returns once `<out>/.samrefiner/<ready>`
    exists (run.json: the run claimed its output, its workers and resource tracker started before;
    records: the workers have written an image): the process and its descendants."""
    images, masks = make_dataset(tmp_path, count=IMAGES)
    command = [
        sys.executable, "-m", "samrefiner", "refine", "--images", str(images), "--masks", str(masks),
        "--out", str(tmp_path / "out"), "--model", str(SAM_REF / "reduced_sam.pth"), "--device", "cpu",
        "--iterations", "1", "--no-progress", "--workers", "2",
    ]  # fmt: skip
    environment = {"PYTHONPATH": str(REPO / "src"), **os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        children = descendants(process.pid)
        if len(children) >= 3 and (tmp_path / "out" / ".samrefiner" / ready).exists():
            return process, children
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the run never had its workers running: {process.communicate()[1].decode()[-2000:]}")


def wait_until_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_kill_9_of_the_main_process_leaves_no_process_of_the_run(tmp_path):
    process, children = start_run(tmp_path, "run.json")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survivors = wait_until_gone(children, 10)
    for pid in survivors:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} of the run's {len(children)} processes outlived it"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_ctrl_c_prints_one_line_and_ends_every_process(tmp_path):
    process, children = start_run(tmp_path, "records")  # the workers at work
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends: to the whole foreground group
    try:
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    survivors = wait_until_gone(children, 10)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    lines = err.decode().splitlines()
    assert len(lines) == 1, err.decode()[-3000:]  # not a traceback per worker
    assert lines == ["samrefiner: interrupted; run the same command with --resume to continue"], err.decode()[-3000:]
    assert process.returncode == 130 and not survivors
