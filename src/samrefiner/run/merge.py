"""The end of a dataset run: every finished image's record merged into the dataset's output.

The dataset merges the records' outputs (COCO: the output JSON); the records' scores lines
(samrefiner.run.writes) become the scores file, one line per finished image in dataset order.
"""

from __future__ import annotations

import json

from samrefiner.io.datasets import Dataset
from samrefiner.io.images import atomic_write
from samrefiner.run.records import RecordStore


def merge_outputs(dataset: Dataset) -> None:
    """Merge every finished image's record (from this and earlier runs, all shards) into the
    dataset's output and the scores file."""
    store = RecordStore(dataset.layout.work_dir)
    keys = [ref.key for ref in dataset.refs()]
    dataset.finalize(store.read(keys, "output"))
    lines = ((json.dumps(scores) + "\n").encode("utf-8") for scores in store.read(keys, "scores").values())
    atomic_write(dataset.layout.scores_path, lambda handle: handle.writelines(lines))
