"""Checkpoint downloads into the cache folder with `torch.hub.download_url_to_file` (a temp file beside
the target, sha256 checked, renamed into place only when right); files found in the cache are verified
too, once (a `.sha256` marker remembers the result)."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.hub
from tqdm import tqdm

from samrefiner.errors import CheckpointError
from samrefiner.io.digests import file_sha256

CACHE_ENV = "SAMREFINER_CACHE"


def cache_dir() -> Path:
    """`$SAMREFINER_CACHE`, default ~/.cache/samrefiner."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/samrefiner").expanduser()


def _sha256_with_bar(path: Path) -> str:
    """Hex sha256 of a file, with a progress bar on stderr (weights files are large)."""
    with tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=None, leave=False
    ) as bar:
        return file_sha256(path, bar.update)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _remember(path: Path, digest: str) -> None:
    """Record that `path`, as it is now (size, mtime), has sha256 `digest`, so it is not hashed again."""
    try:
        _marker(path).write_text(json.dumps({"sha256": digest, **_stamp(path)}) + "\n")
    except OSError:
        pass  # a read-only cache: the file is checked again on the next use


def _known_digest(path: Path) -> str | None:
    """The digest recorded for `path`, if the file has not changed (size, mtime) since."""
    try:
        record = json.loads(_marker(path).read_text())
    except (OSError, ValueError):
        return None
    same_file = isinstance(record, dict) and {key: record.get(key) for key in ("size", "mtime_ns")} == _stamp(path)
    return record.get("sha256") if same_file else None


def verify_cached(path: Path, sha256: str) -> None:
    """Check a file already in the cache (downloaded, or put there by hand) against `sha256`.

    The file is hashed once; a `<file>.sha256` marker keyed by size and mtime spares later runs
    the work. A mismatch is a CheckpointError naming both digests and what to do.
    """
    known = _known_digest(path)
    try:
        found = known or _sha256_with_bar(path)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the cached checkpoint ({error.strerror or error})") from None
    if found != sha256:
        raise CheckpointError(
            f"{path}: sha256 is {found}, expected {sha256} (not the official file, or a damaged copy): "
            "delete it to download it again, or replace it with the official file"
        )
    if known is None:
        _remember(path, found)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """`urlopen` inside torch.hub takes no timeout: give its sockets one while the download runs."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch(url: str, file_name: str, sha256: str, timeout: float = 60.0) -> Path:
    """The cached file `file_name`, downloading it from `url` first when absent.

    The download goes to a temp file next to the target, is checked against `sha256` and renamed into
    place only when complete and correct (`torch.hub.download_url_to_file`); on any failure nothing is
    left in the cache and a CheckpointError says where to put the file by hand. A file already in the
    cache (downloaded, or put there by hand) is checked against `sha256` too, once (see verify_cached).
    """
    target = cache_dir() / file_name
    if target.is_file():
        verify_cached(target, sha256)
        return target
    manual = f"put the official file at {target}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(timeout):
            torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256, progress=sys.stderr.isatty())
    except RuntimeError as error:
        found = re.search(r'got "([0-9a-f]+)"', str(error))
        if found is None:
            raise
        raise CheckpointError(
            f"cannot download {file_name} from {url}: what arrived has sha256 {found.group(1)}, expected {sha256} "
            f"(the transfer was cut short, or the server sent another file); nothing was saved: {manual}"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or str(error) or type(error).__name__
        raise CheckpointError(f"cannot download {file_name} from {url} ({reason}): {manual}") from None
    _remember(target, sha256)
    return target
