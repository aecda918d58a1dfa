"""The sha256 of a file's bytes: one helper for weights, adapters and run inputs alike."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path, on_chunk: Callable[[int], object] | None = None) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks; `on_chunk`, when given, is called with
    each chunk's length (a progress bar's update)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return digest.hexdigest()
