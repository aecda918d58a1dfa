"""One command for a CUDA machine: parity, speed, torchrun; one JSON and one table.

    python3 bench/gpu_check.py                      # on a CUDA machine: everything, in under 8 minutes
    python3 bench/gpu_check.py --json out/gpu.json  # where the figures go (default: gpu_check.json)

It needs the package (`pip install -e .`) and ../shared (or SAMREFINER_SHARED), nothing of the test
suite. With a CUDA GPU:
1. parity: every run of fixtures/sam_reference (reduced_sam.pth, the reference's own image arrays
   and coarse masks) refined on CUDA in strict fp32 (TF32 off for matmuls and cuDNN) and in bf16
   autocast (skipped, and listed, on a GPU without bf16); per run the worst per-object pixel
   agreement with the reference's refined masks.
2. speed: ViT-B and ViT-H shaped SAM with random weights (the real models' FLOPs), built from their
   configs in float32, on the coco_stuff label-map job (bench/throughput.py's measurement:
   runner.run with the background loader, stages timed by samrefiner.timing): images/s, objects/s,
   seconds per image per stage, peak GPU memory, without and with torch.compile, at decoder chunk
   sizes 16, 64, 256. Every run, compilation included, stops at the --budget: what did not finish
   is listed as skipped.
3. torchrun: `samrefiner refine` over the first coco_stuff label maps, once as one process and once
   under `torchrun --nproc-per-node 2` with both ranks on cuda:0. Identical means: both exit 0 and
   the files a user gets (refined maps, scores, resume records, manifest) are byte-identical; each
   process's own bookkeeping (the journals written*.txt, the timed failures.log) is left out.
Without a GPU it says so and runs the CPU part: parity in fp32 on CPU, the speed table for the
reduced model (and any --shapes), the torchrun check on CPU (gloo). The JSON is rewritten as each
part finishes, so a crash keeps what was done. Exit status 1 when the torchrun outputs differ or a
run failed, else 0. Options make each part smaller (the test suite runs
`--cases 2 --images 1 --iterations 1 --no-warm-up`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "bench")]

import throughput  # noqa: E402
from samrefiner import Refiner, RefinerConfig, load_model  # noqa: E402
from samrefiner.io.datasets import OutputLayout  # noqa: E402
from samrefiner.models.sam import SamBackend  # noqa: E402

SAM_REF = throughput.SHARED / "fixtures" / "sam_reference"
STAGES = ("wait for input", "encode", "mine", "decode", "upscale", "write")
BOOKKEEPING = ("written", "failures")  # per-process files of the work folder: journals, timed tracebacks


class PastBudget(BaseException):
    """The time budget ran out (a BaseException: no per-image failure handler may swallow it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """PastBudget in the main thread once `seconds` have passed (a compile that runs on included)."""

    def expire(_signal: int, _frame: object) -> None:
        raise PastBudget

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Float32 matmuls and convolutions in full precision (TF32 off) for the enclosed code."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """A boolean array stored with np.packbits (the reference fixture's format)."""
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(shape).astype(bool)


def parity(device: str, precision: str, cases: list[dict]) -> dict:
    """Worst per-object pixel agreement with the reference's refined masks, per case."""
    model = load_model(str(SAM_REF / "reduced_sam.pth"), device=device)
    model.speed_up(precision)
    worst = {}
    for case in cases:
        arrays = np.load(SAM_REF / case["image_arrays"])
        expected = np.load(SAM_REF / f"{case['case']}.npz")
        config = RefinerConfig(iterations=case["iters"], box_expand_threshold=case["box_expand_threshold"])
        coarse = unpack(arrays["coarse_bits"], arrays["coarse_shape"])
        result = Refiner(model, config).refine(arrays["image_rgb"], coarse)
        reference = unpack(expected["refined_bits"], expected["refined_shape"])
        worst[case["case"]] = float((result.masks == reference).reshape(len(reference), -1).mean(axis=1).min())
    print(f"parity {device} {precision}: worst per-object agreement {min(worst.values()):.4%} over {len(worst)} runs")
    return {"device": device, "precision": precision, "tf32": False, "worst": min(worst.values()), "cases": worst}


def float32_model(shape: str, target: torch.device) -> tuple[SamBackend, str]:
    """The model to time, its weights in float32 whatever the config or file holds (and the dtype it had)."""
    if shape == "reduced":
        model = load_model(str(throughput.REDUCED), device=target)
    else:
        with target:
            model = SamBackend(throughput.random_sam(shape), f"{shape} (random weights)", target)
    found = str(next(model.model.parameters()).dtype).replace("torch.", "")
    model.model.to(torch.float32)
    return model, found


def speed(
    device: str,
    shape: str,
    compiled: bool,
    chunks: list[int],
    images: int,
    iterations: int,
    work: Path,
    warm_up: bool = True,
) -> Iterator[dict]:
    """throughput.measure of one model at each chunk size (after a warm-up image), row by row."""
    torch.manual_seed(0)
    target = torch.device(device)
    model, weights_dtype = float32_model(shape, target)
    model.speed_up("auto", compile=compiled)
    for chunk in chunks:
        refiner = Refiner(model, RefinerConfig(iterations=iterations, chunk_size=chunk))
        if warm_up:
            throughput.measure(throughput.fresh_dataset(work / "warmup"), refiner, 1, target)
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        measured = throughput.measure(throughput.fresh_dataset(work / "run"), refiner, images, target)
        count = max(measured.summary.images, 1)
        row = {
            "model": shape, "compile": compiled, "chunk": chunk, "weights_dtype": weights_dtype,
            "images": measured.summary.images, "objects": measured.summary.objects,
            "images_per_s": measured.summary.images / measured.wall,
            "objects_per_s": measured.summary.objects / measured.wall,
            "s_per_image": {name: measured.times.seconds.get(name, 0.0) / count for name in STAGES},
            "peak_gpu_gib": torch.cuda.max_memory_allocated(target) / 2**30 if target.type == "cuda" else None,
            "outside_model": measured.outside_share,
        }  # fmt: skip
        print(
            f"speed {shape} compile={compiled} chunk={chunk}: {row['images_per_s']:.2f} images/s, "
            f"{row['objects_per_s']:.1f} objects/s"
        )
        yield row


def user_files(out: Path) -> dict[str, bytes]:
    """The files of a folder output that a user gets: all but each process's bookkeeping in the work folder."""
    work = OutputLayout.folder(out).work_dir
    return {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and not (path.parent == work and path.name.startswith(BOOKKEEPING))
    }


def compare(single: Path, multi: Path, exits: dict[str, int]) -> dict:
    """Whether two runs' outputs are the same for a user: both exited 0, the same files, the same bytes."""
    expected, got = user_files(single), user_files(multi)
    differing = sorted(name for name in set(expected) | set(got) if expected.get(name) != got.get(name))
    identical = not differing and bool(expected) and all(code == 0 for code in exits.values())
    return {"identical": identical, "differing": differing, "files": len(expected), "exits": exits}


def torchrun_check(device: str, work: Path, images: int, iterations: int) -> dict:
    """`samrefiner refine` over `images` coco_stuff label maps: one process, then two ranks on `device`."""
    search_path = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    # one thread per process in both runs: float sums are only reproducible at equal thread counts
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(search_path), OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    runs = {}
    for name, prefix in (("single", [sys.executable]), ("torchrun", launcher)):
        command = [
            *prefix, "-m", "samrefiner", "refine", "--model", str(throughput.REDUCED), "--device", device,
            "--images", str(throughput.COCO_STUFF / "imgs"), "--label-maps", str(throughput.COCO_STUFF / "pngs"),
            "--out", str(work / name), "--limit", str(images), "--iterations", str(iterations), "--no-progress",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
        runs[name] = {
            "seconds": time.perf_counter() - start,
            "exit": done.returncode,
            "stdout": done.stdout[-500:],
            "stderr": done.stderr[-1500:],
        }
    result = compare(work / "single", work / "torchrun", {name: run["exit"] for name, run in runs.items()})
    verdict = "identical" if result["identical"] else f"DIFFERENT: {', '.join(result['differing'])}"
    print(f"torchrun 2 ranks on {device}, {images} images: {verdict} (exit codes {result['exits']})")
    return {"device": device, **result, "runs": runs}


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']}"]
    for run in report["parity"]:
        lines.append(f"parity {run['device']} {run['precision']:>5}: worst per-object agreement {run['worst']:.4%}")
    lines.append(
        f"{'model':>8} {'compile':>7} {'chunk':>5} {'img/s':>7} {'obj/s':>7} {'peak GiB':>8}  "
        + " ".join(f"{name[:6]:>7}" for name in STAGES)
        + "  (s/image)"
    )
    for row in report["speed"]:
        peak = f"{row['peak_gpu_gib']:.2f}" if row["peak_gpu_gib"] is not None else "-"
        lines.append(
            f"{row['model']:>8} {str(row['compile']):>7} {row['chunk']:>5} {row['images_per_s']:>7.2f} "
            f"{row['objects_per_s']:>7.1f} {peak:>8}  "
            + " ".join(f"{row['s_per_image'][name]:>7.3f}" for name in STAGES)
        )
    if report["skipped"]:
        lines.append(f"skipped: {', '.join(report['skipped'])}")
    if report["torchrun"]:
        torchrun = report["torchrun"]
        lines.append(f"torchrun 2 ranks on {torchrun['device']}: identical to one process: {torchrun['identical']}")
    return "\n".join(lines)


def save(report: dict, path: Path) -> None:
    """Write the report as it stands (atomically: a crash leaves the last complete one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1))
    os.replace(partial, path)


def arguments(cuda: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--cases", type=int, default=None, help="only the first N reference runs")
    parser.add_argument(
        "--shapes",
        default="vit_b,vit_h" if cuda else "reduced",
        help="models to time: reduced, vit_b, vit_l, vit_h (comma-separated; '' for none)",
    )
    parser.add_argument("--chunks", default="16,64,256" if cuda else "64", help="decoder chunk sizes")
    parser.add_argument("--compile", default="off,on" if cuda else "off", help="off, on or off,on")
    parser.add_argument("--images", type=int, default=6 if cuda else 2, help="coco_stuff images per timing (at most 6)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--skip-torchrun", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep the torchrun check's two outputs in this folder")
    parser.add_argument("--no-warm-up", action="store_true", help="time the first image too (no warm-up image)")
    parser.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="seconds for the speed part: a run (compilation included) past it stops and is skipped",
    )
    return parser.parse_args()


def speed_part(args: argparse.Namespace, device: str, report: dict, work: Path) -> None:
    """Every speed run within the budget; each row saved as it comes."""
    deadline = time.perf_counter() + args.budget
    for shape in filter(None, args.shapes.split(",")):
        for compiled in (mode == "on" for mode in args.compile.split(",")):
            name = f"{shape} compile={compiled}"
            try:
                with time_limit(deadline - time.perf_counter()):
                    for row in speed(
                        device,
                        shape,
                        compiled,
                        [int(chunk) for chunk in args.chunks.split(",")],
                        args.images,
                        args.iterations,
                        work / shape,
                        not args.no_warm_up,
                    ):
                        report["speed"].append(row)
                        save(report, args.json)
            except PastBudget:
                report["skipped"].append(f"{name} (past the {args.budget:.0f} s budget)")
                print(f"speed {name}: stopped, past the {args.budget:.0f} s budget")
                save(report, args.json)


def main() -> None:
    cuda = torch.cuda.is_available()
    args = arguments(cuda)
    device = "cuda:0" if cuda else "cpu"
    if not cuda:
        print("no CUDA GPU here: running the CPU part only (parity in fp32 on CPU, CPU timings, torchrun on CPU)")
    cases = json.loads((SAM_REF / "index.json").read_text())[: args.cases]
    report: dict = {
        "machine": throughput.machine(),
        "cuda": cuda,
        "parity": [],
        "speed": [],
        "skipped": [],
        "torchrun": None,
    }
    start = time.perf_counter()
    with strict_fp32():
        report["parity"].append(parity(device, "fp32", cases))
    if cuda and torch.cuda.is_bf16_supported(including_emulation=False):
        report["parity"].append(parity(device, "bf16", cases))
    elif cuda:
        report["skipped"].append("parity bf16 (this GPU has no bf16)")
    save(report, args.json)
    with tempfile.TemporaryDirectory(prefix="samrefiner-gpu-check-") as folder:
        speed_part(args, device, report, Path(folder))
        if not args.skip_torchrun:
            outputs = args.keep or Path(folder) / "torchrun"
            report["torchrun"] = torchrun_check(device, outputs, max(args.images, 2), args.iterations)
    report["seconds"] = time.perf_counter() - start
    save(report, args.json)
    print(table(report))
    print(f"{report['seconds']:.0f} s; figures in {args.json}")
    sys.exit(1 if report["torchrun"] and not report["torchrun"]["identical"] else 0)


if __name__ == "__main__":
    main()
