"""Merging a run's records into its output reads them one at a time: rank 0 of a large run (or
the last `--resume`) never holds every image's refined annotations at once."""

from __future__ import annotations

import gc
import json
import multiprocessing
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samrefiner.io.datasets import Dataset, OutputLayout, SampleRef
from samrefiner.run.merge import merge_outputs
from samrefiner.run.records import RecordStore

IMAGES = 400
RECORD_BYTES = 50_000  # per image: 20 MB of records in all


class _Summing(Dataset):
    """A dataset whose finalize walks every output twice (as COCO's does for polygon counts)."""

    def __init__(self, out: Path) -> None:
        self.images, self.layout = out, OutputLayout.folder(out)
        self.seen: list[int] = []

    def refs(self) -> list[SampleRef]:
        return [SampleRef(f"image{index}", f"image{index}.jpg") for index in range(IMAGES)]

    def load(self, ref: SampleRef) -> Any:
        raise NotImplementedError

    def write(self, sample: Any, result: Any) -> dict[str, Any]:
        raise NotImplementedError

    def input_files(self, ref: SampleRef) -> list[Path]:
        raise NotImplementedError

    def finalize(self, outputs: Mapping[str, dict[str, Any]]) -> None:
        self.seen = [len(output["blob"]) for output in outputs.values()]
        assert sum(1 for _ in outputs.values()) == len(outputs)


def _merge_peak(out: Path) -> tuple[int, list[int]]:
    """Merge in a fresh process (no other test's threads allocating meanwhile): the traced peak
    and the record sizes finalize saw."""
    dataset = _Summing(out)
    gc.collect()
    tracemalloc.start()
    try:
        merge_outputs(dataset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, dataset.seen


def test_merge_reads_one_record_at_a_time(tmp_path):
    dataset = _Summing(tmp_path / "out")
    store = RecordStore(dataset.layout.work_dir)
    for index in range(IMAGES):
        if index % 7:  # some images not finished: left out, order kept
            store.put(f"image{index}", {"output": {"blob": "x" * (RECORD_BYTES + index)}, "scores": {"image": index}})
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        peak, dataset.seen = pool.apply(_merge_peak, (tmp_path / "out",))
    finished = [index for index in range(IMAGES) if index % 7]
    assert dataset.seen == [RECORD_BYTES + index for index in finished]
    lines = dataset.layout.scores_path.read_text().splitlines()
    assert [json.loads(line)["image"] for line in lines] == finished
    # all records together take 343 x 50 kB = 17 MB (the old merge peaked there); one at a time, a few
    # records (plus whatever else Python allocates meanwhile: measured up to 2.2 MB) stay far below
    assert peak < IMAGES * RECORD_BYTES / 4, peak
