"""Memory and indexing time of `--coco` inputs with 100K and 1M annotations, per torchrun rank.

    python3 bench/large_coco.py                         # 100K and 1M annotations, 1 and 8 ranks
    python3 bench/large_coco.py --sizes 100000 --ranks 4

For each size it writes a synthetic COCO ground-truth file (7 annotations per image, 640 x 480
images, small segmentations: half 6-point polygons, half uncompressed RLE; ids, bbox, area,
iscrowd, category as in COCO) and runs, each in a fresh process:
- "whole file": what one process needed before the streaming index (json.load of the file and
  the per-image lists of annotation indices), the reference for the per-rank figures;
- "rank r of W": `CocoDataset` as every rank builds it (the streaming index), then the rank's
  images (`Ranks(r, W).shard`) with their annotations parsed one image at a time, as `load`
  does ("streamed"), and once more holding all of its annotations at once ("held").
Memory is the process's peak RSS minus its RSS before reading (after imports). The ranks run one
after another (the figures per process are those of a concurrent run; the wall time is not).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PER_IMAGE = 7
HEIGHT, WIDTH = 480, 640
TARGET_SHARE = 0.25  # a rank's memory for annotations at most a quarter of the whole file's


def write_coco(path: Path, annotations: int) -> None:
    """The synthetic file, written as a stream (never held whole)."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = -(-annotations // PER_IMAGE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"info": {"description": "synthetic, bench/large_coco.py"}, "images": [')
        handle.write(
            ",".join(
                json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": HEIGHT, "width": WIDTH})
                for i in range(images)
            )
        )
        handle.write('], "annotations": [')
        corners = rng.integers(0, 400, size=(annotations, 2))
        for number in range(annotations):
            x, y = (int(value) for value in corners[number])
            if number % 2:
                segmentation = {
                    "size": [HEIGHT, WIDTH],
                    "counts": [x * HEIGHT + y, 30, HEIGHT * WIDTH - x * HEIGHT - y - 30],
                }
            else:
                segmentation = [[x, y, x + 40.5, y, x + 40.5, y + 30.25]]
            annotation = {
                "id": number + 1,
                "image_id": number // PER_IMAGE + 1,
                "category_id": number % 80 + 1,
                "iscrowd": 0,
                "area": 607.5,
                "bbox": [x, y, 40.5, 30.25],
                "segmentation": segmentation,
            }
            handle.write(("," if number else "") + json.dumps(annotation))
        handle.write(
            '], "categories": [' + ",".join(json.dumps({"id": c, "name": f"c{c}"}) for c in range(1, 81)) + "]}"
        )


def rss_mib() -> float:
    """Current resident set size."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_whole(path: Path) -> dict:
    """json.load of the whole file and per-image index lists (the former CocoDataset)."""
    from collections import defaultdict

    before = rss_mib()
    start = time.perf_counter()
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    by_image = defaultdict(list)
    for index, annotation in enumerate(data["annotations"]):
        if not annotation.get("iscrowd"):
            by_image[annotation["image_id"]].append(index)
    return {"seconds": time.perf_counter() - start, "mib": peak_mib() - before}


def measure_rank(path: Path, rank: int, world: int) -> dict:
    """The streaming index as a rank builds it, then this rank's annotations."""
    from samrefiner.io.coco import CocoDataset
    from samrefiner.run.distributed import Ranks
    from samrefiner.run.shards import Shard

    before = rss_mib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        dataset = CocoDataset(Path(folder), path, Path(folder) / "out.json")
        seconds = time.perf_counter() - start
        index = dataset.index
        image_of_key = {str(image_id): image_id for image_id in index.by_image}
        mine = Ranks(rank, world).shard(Shard()).select(dataset.refs())
        indexed = peak_mib() - before
        parsed = 0
        for ref in mine:  # as `load` does: one image's annotations at a time
            parsed += len([index.annotations[i] for i in index.by_image[image_of_key[ref.key]]])
        streamed = peak_mib() - before
        held = [[index.annotations[i] for i in index.by_image[image_of_key[ref.key]]] for ref in mine]
        return {
            "seconds": seconds,
            "images": len(mine),
            "annotations": parsed,
            "indexed_mib": indexed,
            "streamed_mib": streamed,
            "held_mib": peak_mib() - before,
            "held": len(held),
        }


def child(kind: str, path: Path, rank: int, world: int) -> dict:
    """Run one measurement in a fresh process (its own peak RSS)."""
    command = [
        sys.executable,
        __file__,
        "--measure",
        kind,
        "--file",
        str(path),
        "--rank",
        str(rank),
        "--world",
        str(world),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="annotations per file, comma-separated")
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--folder", type=Path, help="where to keep the files (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--measure", choices=["whole", "rank"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        figures = (
            measure_whole(args.file) if args.measure == "whole" else measure_rank(args.file, args.rank, args.world)
        )
        print(json.dumps(figures))
        return

    report = []
    with tempfile.TemporaryDirectory(prefix="samrefiner-large-coco-") as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for size in (int(text) for text in args.sizes.split(",")):
            path = folder / f"synthetic_{size}.json"
            if not path.exists():
                start = time.perf_counter()
                write_coco(path, size)
                print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
            whole = child("whole", path, 0, 1)
            single = child("rank", path, 0, 1)
            ranks = [child("rank", path, rank, args.ranks) for rank in range(args.ranks)]
            worst = max(ranks, key=lambda figures: figures["streamed_mib"])
            worst_held = max(figures["held_mib"] for figures in ranks)
            print(f"\n== {size} annotations ({path.stat().st_size / 2**20:.0f} MiB file)")
            print(f"  whole file, one process (json.load): {whole['mib']:.0f} MiB, {whole['seconds']:.1f} s")
            print(
                f"  streaming index, 1 rank: index {single['seconds']:.1f} s, {single['indexed_mib']:.0f} MiB; "
                f"all images streamed {single['streamed_mib']:.0f} MiB"
            )
            print(
                f"  {'rank':>6} {'images':>8} {'annotations':>12} {'index s':>8} {'index MiB':>10} "
                f"{'streamed MiB':>13} {'held MiB':>9}"
            )
            for rank, figures in enumerate(ranks):
                print(
                    f"  {rank:>6} {figures['images']:>8} {figures['annotations']:>12} {figures['seconds']:>8.1f} "
                    f"{figures['indexed_mib']:>10.0f} {figures['streamed_mib']:>13.0f} {figures['held_mib']:>9.0f}"
                )
            share = worst["streamed_mib"] / whole["mib"]
            print(
                f"  worst rank of {args.ranks}: {worst['streamed_mib']:.0f} MiB streamed ({share:.1%} of the whole "
                f"file's {whole['mib']:.0f} MiB; target <= {TARGET_SHARE:.0%}), {worst_held:.0f} MiB holding all "
                f"its annotations ({worst_held / whole['mib']:.1%}); indexing {max(f['seconds'] for f in ranks):.1f} s"
            )
            report.append({"annotations": size, "whole": whole, "single": single, "ranks": ranks})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
