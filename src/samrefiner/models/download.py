"""Checkpoint downloads into the cache folder: streamed to a temp file, verified, then renamed into place;
files found in the cache are verified too, once (a `.sha256` marker remembers the result)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from samrefiner.errors import CheckpointError

CACHE_ENV = "SAMREFINER_CACHE"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$SAMREFINER_CACHE`, default ~/.cache/samrefiner."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/samrefiner").expanduser()


def sha256_of(path: Path, progress: bool = False) -> str:
    """Hex sha256 of a file, read in chunks (with a bar on stderr when `progress`)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as stream, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress or None, leave=False
    ) as bar:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


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
        found = known or sha256_of(path, progress=True)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the cached checkpoint ({error.strerror or error})") from None
    if found != sha256:
        raise CheckpointError(
            f"{path}: sha256 is {found}, expected {sha256} (not the official file, or a damaged copy): "
            f"delete it to download it again, replace it with the official file, or pass --model PATH"
        )
    if known is None:
        _remember(path, found)


class _IncompleteTransfer(Exception):
    """The server closed the connection before sending the announced length."""


def _stream(url: str, out_path: Path, timeout: float) -> str:
    """Copy `url` into `out_path`; return the sha256 of what was received."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(out_path, "wb") as out:
        announced = response.headers.get("Content-Length")
        total = int(announced) if announced else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=out_path.name, disable=None, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _IncompleteTransfer(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def fetch(url: str, file_name: str, sha256: str, timeout: float = 60.0) -> Path:
    """The cached file `file_name`, downloading it from `url` first when absent.

    A download is written to a temp file next to the target, checked against `sha256` and renamed into
    place only when complete and correct; on any failure nothing is left in the cache and a
    CheckpointError says where to put the file by hand. A file already in the cache (downloaded, or
    put there by hand) is checked against `sha256` too, once (see verify_cached).
    """
    target = cache_dir() / file_name
    if target.is_file():
        verify_cached(target, sha256)
        return target
    manual = f"put the file at {target} or pass --model PATH"
    temp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".part", dir=target.parent)
        os.close(handle)
        temp = Path(name)
        received = _stream(url, temp, timeout)
        if received != sha256:
            raise CheckpointError(
                f"downloaded {file_name} from {url} has sha256 {received}, expected {sha256}; "
                f"nothing was saved: {manual}"
            )
        os.replace(temp, target)
        temp = None
        _remember(target, received)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, _IncompleteTransfer) as error:
        reason = getattr(error, "reason", None) or str(error) or type(error).__name__
        raise CheckpointError(f"cannot download {file_name} from {url} ({reason}): {manual}") from None
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    return target
