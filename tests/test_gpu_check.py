"""bench/gpu_check.py's CPU part runs (its CUDA parts run on a GPU machine): a smoke test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs its full CUDA checks")
def test_the_cpu_part_runs_and_reports_parity_and_speed(tmp_path: Path) -> None:
    report_path = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cases", "1", "--images", "1", "--iterations", "1",
         "--skip-torchrun", "--no-warm-up", "--json", str(report_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU here" in done.stdout
    report = json.loads(report_path.read_text())
    (parity,) = report["parity"]
    assert parity["device"] == "cpu" and parity["precision"] == "fp32"
    assert list(parity["cases"]) == ["voc_example__iters1_margin0.0"] and parity["worst"] >= 0.999
    (row,) = report["speed"]
    assert row["model"] == "reduced" and row["images"] == 1 and row["objects"] > 0
    assert row["s_per_image"]["encode"] > 0 and row["s_per_image"]["decode"] > 0 and row["peak_gpu_gib"] is None
    assert "reduced   False    64" in done.stdout  # the table
