"""Resume records of a dataset run: one per finished image, the mark that it is done.

The record is written after the image's outputs (each file atomically): a resumed run skips images
that have one, so a run killed at any point loses at most the image in progress and never writes an
image twice. Records are named by the sha256 of the image's key (any path the file system takes as
an input works) and hold the fingerprints of the image's input files (samrefiner.run.fingerprints).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from samrefiner.io.images import atomic_write


class RecordStore:
    """One JSON record per finished image in `<work>/records/<sha256 of its key>.json`, each written
    atomically: a fixed-length name, whatever the image's path. A record holds the image's key, the
    fingerprints of its input files (samrefiner.run.fingerprints), its scores and its output."""

    def __init__(self, work_dir: Path) -> None:
        self.folder = work_dir / "records"

    def finished(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that have a record."""
        if not self.folder.is_dir():
            return set()
        present = {entry.name for entry in os.scandir(self.folder)}
        return {key for key in keys if self._path(key).name in present}

    def put(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps({"key": key, **record}, separators=(",", ":"))
        atomic_write(self._path(key), lambda handle: handle.write(text.encode("utf-8")))

    def drop(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def read(self, keys: Iterable[str], part: str) -> Records:
        """`part` ("output" or "scores") of the records of those keys that have one, in the order
        given; each read from its file when it is looked up, so a merge holds one at a time."""
        keys = list(keys)
        finished = self.finished(keys)
        return Records(self, [key for key in keys if key in finished], part)

    def load(self, key: str) -> dict[str, Any]:
        return json.loads(self._path(key).read_text(encoding="utf-8"))

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"


class Records(Mapping[str, Any]):
    """Image key -> one part of its record, read from disk on each lookup (nothing is kept)."""

    def __init__(self, store: RecordStore, keys: list[str], part: str) -> None:
        self.store, self._keys, self._known, self.part = store, keys, set(keys), part

    def __getitem__(self, key: str) -> Any:
        if key not in self._known:
            raise KeyError(key)
        return self.store.load(key)[self.part]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
