"""Checkpoint downloads into the cache folder: streamed to a temp file, verified, then renamed into place."""

from __future__ import annotations

import hashlib
import http.client
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


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    CheckpointError says where to put the file by hand.
    """
    target = cache_dir() / file_name
    if target.is_file():
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
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, _IncompleteTransfer) as error:
        reason = getattr(error, "reason", None) or str(error) or type(error).__name__
        raise CheckpointError(f"cannot download {file_name} from {url} ({reason}): {manual}") from None
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    return target
