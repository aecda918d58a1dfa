"""The background loader: images and coarse masks are decoded in a thread while the model works.

`load_in_background` is a drop-in `loader` for `samrefiner.runner.run`: the same (ref, sample or
exception) pairs as `load_in_order`, in the same order, but a thread decodes up to `depth` samples
ahead (a bounded queue, so memory holds at most depth + 2 samples: the queue, the one being
decoded and the one being refined). A sample that fails to load comes back as its exception, in its
place; anything else that stops the thread is raised in the consumer. Closing the generator early
(an error or Ctrl-C in the consumer) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from samrefiner.io.datasets import Dataset, Sample, SampleRef
from samrefiner.runner import load_one
from samrefiner.timing import stage

DEFAULT_DEPTH = 2
_POLL_SECONDS = 0.1


class _Crashed:
    """Carries an error that ended the loader thread (not a per-sample failure)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def load_in_background(
    dataset: Dataset, refs: list[SampleRef], depth: int = DEFAULT_DEPTH
) -> Iterator[tuple[SampleRef, Sample | Exception]]:
    """`load_in_order`, decoded by a background thread that stays at most `depth` samples ahead."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        """Put `item` in the queue unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for ref in refs:
                if not hand_over((ref, load_one(dataset, ref))):
                    return
        except BaseException as error:  # noqa: BLE001  (handed to the consumer, which raises it)
            hand_over(_Crashed(error))

    thread = threading.Thread(target=produce, name="samrefiner-loader", daemon=True)
    thread.start()
    try:
        for _ in refs:
            with stage("wait for input"):
                item = ready.get()
            if isinstance(item, _Crashed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
