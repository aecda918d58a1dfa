"""`samrefiner refine` under torchrun: rank shards, device per rank, one merged output identical to a
single process's (COCO JSON, scores, records, errors file), byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import DATA, REPO, SAM_REF
from samrefiner.errors import InputError
from samrefiner.io.datasets import SampleRef
from samrefiner.run.distributed import Ranks
from samrefiner.run.shards import Shard, select

COCO_STUFF = DATA / "coco_stuff"


def test_ranks_from_torchrun_environment() -> None:
    assert Ranks.from_env({}) == Ranks(0, 1, 0)
    assert Ranks.from_env({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"}) == Ranks(5, 8, 1)
    for bad in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "two"}):
        with pytest.raises(InputError, match="RANK|WORLD_SIZE"):
            Ranks.from_env(bad)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("shard", [Shard(), Shard(1, 3)])
@pytest.mark.parametrize("limit", [None, 1, 4, 7])
def test_ranks_split_exactly_the_single_process_selection(world: int, shard: Shard, limit: int | None) -> None:
    refs = [SampleRef(f"img{index}", f"img{index}.png") for index in range(23)]
    expected = select(refs, shard, limit)
    parts = [select(refs, ranks.shard(shard), ranks.limit(limit)) for ranks in (Ranks(r, world) for r in range(world))]
    assert sorted((ref.key for part in parts for ref in part), key=lambda key: int(key[3:])) == [
        r.key for r in expected
    ]
    assert all(part == expected[rank::world] for rank, part in enumerate(parts))


def test_each_rank_gets_its_own_gpu() -> None:
    assert Ranks(3, 4, 1).device("auto", cuda_available=True) == "cuda:1"
    assert Ranks(3, 4, 1).device("cuda", cuda_available=True) == "cuda:1"
    assert Ranks(3, 4, 1).device("cuda:0", cuda_available=True) == "cuda:0"
    assert Ranks(3, 4, 1).device("auto", cuda_available=False) == "cpu"
    assert Ranks().device("cuda", cuda_available=True) == "cuda"


def coco_ground_truth(folder: Path) -> Path:
    """Four coco_stuff images (one COCO annotation per class of their label maps) and, second in
    the list, an image whose file is missing (it must fail on whichever rank gets it)."""
    images, annotations = [], []
    for index in range(4):
        label_map = np.asarray(Image.open(COCO_STUFF / "pngs" / f"{index}.png"))
        height, width = label_map.shape
        images.append({"id": index, "file_name": f"{index}.jpg", "height": height, "width": width})
        for class_id in np.unique(label_map):
            if class_id in (0, 255):
                continue
            rle = mask_utils.encode(np.asfortranarray(label_map == class_id))
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(class_id),
                    "segmentation": segmentation,
                }
            )
    images.insert(1, {"id": 99, "file_name": "missing.jpg", "height": 10, "width": 10})
    annotations.append({"id": 999, "image_id": 99, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8]]})
    path = folder / "ground_truth.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return path


def refine_command(coco: Path, out: Path) -> list[str]:
    return [
        "-m", "samrefiner", "refine", "--model", str(SAM_REF / "reduced_sam.pth"), "--images", str(COCO_STUFF / "imgs"),
        "--coco", str(coco), "--out", str(out), "--device", "cpu", "--iterations", "1", "--no-progress",
    ]  # fmt: skip


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def journaled(files: dict[str, bytes]) -> set[str]:
    return {
        line
        for name, text in files.items()
        if name.startswith("refined.work/written")
        for line in text.decode().split()
    }


def without_bookkeeping(files: dict[str, bytes]) -> dict[str, bytes]:
    return {
        name: text
        for name, text in files.items()
        if not name.startswith(("refined.work/written", "refined.work/failures"))
    }


def test_torchrun_two_processes_leave_the_output_of_one(tmp_path: Path) -> None:
    coco = coco_ground_truth(tmp_path)
    # one thread per process in both runs: float sums are only reproducible at equal thread counts
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    single = subprocess.run(
        [sys.executable, *refine_command(coco, tmp_path / "single" / "refined.json")],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    multi = subprocess.run(
        [*torchrun, *refine_command(coco, tmp_path / "multi" / "refined.json")],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert single.returncode == 1, single.stderr  # the missing image fails, the rest are refined
    assert multi.returncode != 0, multi.stderr
    assert "4 images, " in single.stdout and "1 failed" in single.stdout
    assert multi.stdout.count("4 images, ") == 1 and "1 failed" in multi.stdout  # rank 0 reports the whole run
    expected, merged = files_under(tmp_path / "single"), files_under(tmp_path / "multi")
    # per-process bookkeeping: the journals of written files (one per rank) and the tracebacks (timed)
    assert journaled(merged) >= journaled(expected) == {"refined.json", "refined.scores.jsonl", "refined.errors.txt"}
    assert all(b"missing.jpg" in files["refined.work/failures.log"] for files in (expected, merged))
    expected, merged = without_bookkeeping(expected), without_bookkeeping(merged)
    assert sorted(merged) == sorted(expected)  # no rank files left behind
    assert {"refined.json", "refined.scores.jsonl", "refined.errors.txt"} <= set(expected)
    assert [name for name in expected if merged[name] != expected[name]] == []
    assert "missing.jpg: file not found" in expected["refined.errors.txt"].decode()
    annotations = json.loads(expected["refined.json"])["annotations"]
    assert [a["segmentation"] for a in annotations if a["image_id"] == 99] == [[[1, 1, 8, 1, 8, 8]]]  # kept as it was
    assert all("bbox" in a for a in annotations if a["image_id"] != 99)  # refined: box and area recomputed
