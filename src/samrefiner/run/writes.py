"""Writing one image of a dataset run: its outputs (each file atomically), then its record.

`InlineWrites` writes each image in the run's own thread as it is refined; samrefiner.run.loader's
workers write in other processes, settling in the same order.

Scores file (`<out>/scores.jsonl`, or `<name>.scores.jsonl` beside a `.json` output): one JSON
object per line and per finished image, in dataset order (samrefiner.run.merge writes it from the
records' scores lines made here):

    {"image": "<key>", "file": "<image path relative to --images>",
     "objects": [{"id": ..., "category_id": ..., "predicted_iou": 0.93, "chosen": 1,
                  "empty_input": false, "empty_output": false, "box_expanded": false}, ...]}

`key` names the image (its path relative to `--images` without suffix; the image id for COCO);
object `id` is the mask's file name (masks), the region's index in the image's split-then-merge
regions (label maps, `category_id` its class) or the annotation id (COCO, `category_id` kept);
`predicted_iou` is SAM's predicted IoU of the chosen mask (null when the object kept its
coarse mask), `chosen` its index among the three candidates (-1 then); `empty_input`/`empty_output`
flag an empty coarse mask and an empty refined output (the coarse mask was kept); `box_expanded`
tells whether the elastic box grew.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.run.records import RecordStore
from samrefiner.timing import stage


def write_and_record(dataset: Dataset, store: RecordStore, sample: Sample, result: Any, overlays: Path | None) -> None:
    """Write one image's outputs, then its record (the mark of a finished image)."""
    store.put(sample.ref.key, {"inputs": sample.inputs, **_write_one(dataset, sample, result, overlays)})


class InlineWrites:
    """Writes each image as it is submitted; failures and successes come back in submission order
    from `settled` (a subclass may write elsewhere and settle later, in the same order)."""

    def __init__(self, dataset: Dataset, store: RecordStore, overlays: Path | None) -> None:
        self.dataset, self.store, self.overlays = dataset, store, overlays
        self.pending: deque[tuple[SampleRef, Any, Future]] = deque()  # (ref, result or None, write)

    def submit(self, sample: Sample, result: Any) -> None:
        self.pending.append((sample.ref, result, self._start(sample, result)))

    def fail(self, ref: SampleRef, error: Exception) -> None:
        failed: Future = Future()
        failed.set_exception(error)
        self.pending.append((ref, None, failed))

    def settled(self, wait: bool = False) -> Iterator[tuple[SampleRef, Any, Exception | None]]:
        """(ref, result, error or None) of the finished head of the queue (all of it with `wait`)."""
        while self.pending and (wait or self.pending[0][2].done()):
            ref, result, future = self.pending.popleft()
            with stage("write"):
                error = future.exception()
            yield ref, result, error

    def close(self) -> None:
        """Called once the run ends, normally or not."""

    def _start(self, sample: Sample, result: Any) -> Future:
        done: Future = Future()
        try:
            with stage("write"):
                write_and_record(self.dataset, self.store, sample, result, self.overlays)
            done.set_result(None)
        except Exception as error:  # noqa: BLE001  (recorded, and the run goes on)
            done.set_exception(error)
        return done


Writer = Callable[[Dataset, RecordStore, "Path | None"], InlineWrites]


def _write_one(dataset: Dataset, sample: Sample, result: Any, overlays: Path | None) -> dict[str, Any]:
    """Write one image's refined masks; return its record (scores and the format's own extras)."""
    output = dataset.write(sample, result)
    if overlays is not None:
        from samrefiner.io.overlays import write_overlay

        write_overlay(overlays / f"{sample.ref.key}.png", sample.image, sample.masks, result.masks)
    return {"scores": _scores_line(dataset, sample, result), "output": output}


def _scores_line(dataset: Dataset, sample: Sample, result: Any) -> dict[str, Any]:
    objects = [
        {
            **meta,
            "predicted_iou": _number_or_none(result.scores[index]),
            "chosen": int(result.chosen[index]),
            "empty_input": bool(result.empty_input[index]),
            "empty_output": bool(result.empty_output[index]),
            "box_expanded": bool(result.prompts.box_expanded[index]),
        }
        for index, meta in enumerate(sample.objects)
    ]
    return {
        "image": sample.ref.key,
        "file": Path(os.path.relpath(sample.image_path, dataset.images)).as_posix(),
        "objects": objects,
    }


def _number_or_none(value: float) -> float | None:
    """JSON has no NaN: an object that kept its coarse mask has no predicted IoU (null)."""
    return None if math.isnan(value) else float(value)
