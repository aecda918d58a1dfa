"""One command for a CUDA machine: parity, speed, torchrun; one JSON and one table.

    python3 bench/gpu_check.py                      # on a CUDA machine: everything, in under 8 minutes
    python3 bench/gpu_check.py --json out/gpu.json  # where the figures go (default: gpu_check.json)

With a CUDA GPU:
1. parity: every run of ../shared/fixtures/sam_reference (reduced_sam.pth, the reference's own
   image arrays and coarse masks) refined on CUDA in fp32 and in bf16 (the default autocast);
   per run the worst per-object pixel agreement with the reference's refined masks.
2. speed: ViT-B and ViT-H shaped SAM with random weights (the real models' FLOPs) on the
   coco_stuff label-map job (bench/throughput.py's measurement: runner.run with the background
   loader, stages timed by samrefiner.timing): images/s, objects/s, seconds per image per stage,
   peak GPU memory, without and with torch.compile, at decoder chunk sizes 16, 64, 256.
3. torchrun: `torchrun --nproc-per-node 2` with both ranks on cuda:0 over
   tests/test_distributed.py's COCO file; its output files must equal one process's, byte for byte.
Without a GPU it says so and runs the CPU part: parity in fp32 on CPU, the speed table for the
reduced model (and any --shapes), the torchrun check on CPU; then exits 0. Options make each
part smaller (the test suite runs `--cases 1 --images 1 --iterations 1 --skip-torchrun --no-warm-up`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "bench"), str(REPO / "tests")]

import throughput  # noqa: E402
from test_distributed import coco_ground_truth, files_under, refine_command  # noqa: E402
from test_refine import CASES, unpack  # noqa: E402

from samrefiner import Refiner, RefinerConfig, load_model  # noqa: E402
from samrefiner.models.sam import SamBackend  # noqa: E402

SAM_REF = throughput.SHARED / "fixtures" / "sam_reference"
STAGES = ("wait for input", "encode", "mine", "decode", "upscale", "write")


def parity(device: str, precision: str, cases: list[dict]) -> dict:
    """Worst per-object pixel agreement with the reference's refined masks, per case."""
    model = load_model(str(SAM_REF / "reduced_sam.pth"), device=device)
    model.speed_up(precision)
    worst = {}
    for case in cases:
        arrays = np.load(SAM_REF / case["image_arrays"])
        expected = np.load(SAM_REF / f"{case['case']}.npz")
        config = RefinerConfig(iterations=case["iters"], box_expand_threshold=case["box_expand_threshold"])
        result = Refiner(model, config).refine(arrays["image_rgb"], unpack(arrays["coarse_bits"], arrays["coarse_shape"]))
        reference = unpack(expected["refined_bits"], expected["refined_shape"])
        worst[case["case"]] = float((result.masks == reference).reshape(len(reference), -1).mean(axis=1).min())
    print(f"parity {device} {precision}: worst per-object agreement {min(worst.values()):.4%} over {len(worst)} runs")
    return {"device": device, "precision": precision, "worst": min(worst.values()), "cases": worst}


def speed(device: str, shape: str, compiled: bool, chunks: list[int], images: int, iterations: int,
          work: Path, warm_up: bool = True) -> list[dict]:
    """throughput.measure of one model at each chunk size (after a warm-up image)."""
    torch.manual_seed(0)
    target = torch.device(device)
    if shape == "reduced":
        model = load_model(str(throughput.REDUCED), device=device)
    else:
        with target:
            model = SamBackend(throughput.random_sam(shape), f"{shape} (random weights)", target)
    model.speed_up("auto", compile=compiled)
    rows = []
    for chunk in chunks:
        refiner = Refiner(model, RefinerConfig(iterations=iterations, chunk_size=chunk))
        if warm_up:
            throughput.measure(throughput.fresh_dataset(work / "warmup"), refiner, 1, target)
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        measured = throughput.measure(throughput.fresh_dataset(work / "run"), refiner, images, target)
        count = max(measured.summary.images, 1)
        row = {
            "model": shape, "compile": compiled, "chunk": chunk, "images": measured.summary.images,
            "objects": measured.summary.objects, "images_per_s": measured.summary.images / measured.wall,
            "objects_per_s": measured.summary.objects / measured.wall,
            "s_per_image": {name: measured.times.seconds.get(name, 0.0) / count for name in STAGES},
            "peak_gpu_gib": torch.cuda.max_memory_allocated(target) / 2**30 if target.type == "cuda" else None,
            "outside_model": measured.outside_share,
        }
        rows.append(row)
        print(f"speed {shape} compile={compiled} chunk={chunk}: {row['images_per_s']:.2f} images/s, "
              f"{row['objects_per_s']:.1f} objects/s")
    return rows


def torchrun_check(device: str, work: Path) -> dict:
    """Two ranks on one device against one process: equal output files?"""
    coco = coco_ground_truth(work)
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    runs = {}
    for name, prefix in (("single", [sys.executable]), ("torchrun", launcher)):
        command = [*prefix, *refine_command(coco, work / name / "refined.json"), "--device", device]
        start = time.perf_counter()
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
        runs[name] = {"seconds": time.perf_counter() - start, "exit": done.returncode, "stdout": done.stdout[-500:]}
    single, multi = files_under(work / "single"), files_under(work / "torchrun")
    differing = sorted(name for name in set(single) | set(multi) if single.get(name) != multi.get(name))
    print(f"torchrun 2 ranks on {device}: {'identical' if not differing else 'DIFFERENT: ' + ', '.join(differing)}")
    return {"device": device, "identical": not differing and bool(single), "differing": differing, "runs": runs}


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']}"]
    for run in report["parity"]:
        lines.append(f"parity {run['device']} {run['precision']:>5}: worst per-object agreement {run['worst']:.4%}")
    lines.append(f"{'model':>8} {'compile':>7} {'chunk':>5} {'img/s':>7} {'obj/s':>7} {'peak GiB':>8}  "
                 + " ".join(f"{name[:6]:>7}" for name in STAGES) + "  (s/image)")
    for row in report["speed"]:
        peak = f"{row['peak_gpu_gib']:.2f}" if row["peak_gpu_gib"] is not None else "-"
        lines.append(f"{row['model']:>8} {str(row['compile']):>7} {row['chunk']:>5} {row['images_per_s']:>7.2f} "
                     f"{row['objects_per_s']:>7.1f} {peak:>8}  "
                     + " ".join(f"{row['s_per_image'][name]:>7.3f}" for name in STAGES))
    if report.get("skipped"):
        lines.append(f"skipped (time budget): {', '.join(report['skipped'])}")
    if report["torchrun"]:
        lines.append(f"torchrun 2 ranks on {report['torchrun']['device']}: identical to one process: "
                     f"{report['torchrun']['identical']}")
    return "\n".join(lines)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--cases", type=int, default=None, help="only the first N reference runs")
    parser.add_argument("--shapes", default="vit_b,vit_h" if cuda else "reduced",
                        help="models to time: reduced, vit_b, vit_l, vit_h (comma-separated; '' for none)")
    parser.add_argument("--chunks", default="16,64,256" if cuda else "64", help="decoder chunk sizes")
    parser.add_argument("--compile", default="off,on" if cuda else "off", help="off, on or off,on")
    parser.add_argument("--images", type=int, default=6 if cuda else 2, help="coco_stuff images per timing (at most 6)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--skip-torchrun", action="store_true")
    parser.add_argument("--no-warm-up", action="store_true", help="time the first image too (no warm-up image)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which the remaining speed runs are skipped (and listed as skipped)")
    args = parser.parse_args()

    device = "cuda:0" if cuda else "cpu"
    if not cuda:
        print("no CUDA GPU here: running the CPU part only (parity in fp32 on CPU, CPU timings, torchrun on CPU)")
    cases = CASES[: args.cases]
    report: dict = {"machine": throughput.machine(), "cuda": cuda, "parity": [], "speed": [], "torchrun": None}
    start = time.perf_counter()
    for precision in ("fp32", "bf16") if cuda else ("fp32",):
        report["parity"].append(parity(device, precision, cases))
    with tempfile.TemporaryDirectory(prefix="samrefiner-gpu-check-") as folder:
        work = Path(folder)
        report["skipped"] = []
        for shape in filter(None, args.shapes.split(",")):
            for compiled in (mode == "on" for mode in args.compile.split(",")):
                if time.perf_counter() - start > args.budget:
                    report["skipped"].append(f"{shape} compile={compiled}")
                    print(f"speed {shape} compile={compiled}: skipped, past the {args.budget:.0f} s budget")
                    continue
                chunks = [int(chunk) for chunk in args.chunks.split(",")]
                report["speed"] += speed(device, shape, compiled, chunks, args.images, args.iterations, work / shape,
                                        not args.no_warm_up)
        if not args.skip_torchrun:
            report["torchrun"] = torchrun_check(device, work / "torchrun")
    report["seconds"] = time.perf_counter() - start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"{report['seconds']:.0f} s; figures in {args.json}")


if __name__ == "__main__":
    main()
