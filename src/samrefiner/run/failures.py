"""Failures of a dataset run: how they are reported, and which stop the run.

Reporting:
- Every failed image gets its one line in the errors file (`ErrorLog`; `describe_failure` makes
  the line, `write_errors` writes the merged file of several processes) and its full traceback in
  `<work>/failures.log` (`FailureLog`: appended, one write per entry, so processes of one run may
  share it).

Policy (`FailurePolicy`):
- An `InputError` (an image or mask that cannot be used; the runner reports whatever reading an
  image's files raises as one) is a data problem: recorded per file, it never stops the run, and it
  neither counts toward nor breaks a row of failures below.
- Any other exception type failing `max_consecutive` images in a row (default 5) is systemic (a
  broken model call, a full disk) and stops the run; a refined image ends the row.
- A device error (CUDA out of memory, "CUDA error", a device-side assert, cuBLAS / cuDNN / NCCL
  failures, MPS out of memory) stops the run at its first image.

A stopped run keeps all finished work (records and the merged output): a resumed run continues it.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samrefiner.errors import InputError, SamRefinerError
from samrefiner.io.datasets import SampleRef
from samrefiner.io.images import atomic_write

DEFAULT_MAX_CONSECUTIVE = 5
DEVICE_ERROR_TYPES = ("OutOfMemoryError", "AcceleratorError")  # torch's own exception classes
DEVICE_ERROR_TEXTS = (
    "CUDA out of memory",
    "CUDA error",
    "device-side assert",
    "CUBLAS_STATUS_",
    "CUDNN_STATUS_",
    "cuDNN error",
    "NCCL error",
    "HIP error",
    "MPS backend out of memory",
)


def is_device_error(error: BaseException) -> bool:
    """Whether `error` is the accelerator failing (out of memory, a CUDA error), not this image."""
    torch_types = {cls.__name__ for cls in type(error).__mro__ if cls.__module__.split(".")[0] == "torch"}
    return bool(torch_types & set(DEVICE_ERROR_TYPES)) or any(text in str(error) for text in DEVICE_ERROR_TEXTS)


class FailurePolicy:
    """Tells, image by image, whether the run must stop (see the module docstring)."""

    def __init__(self, max_consecutive: int = DEFAULT_MAX_CONSECUTIVE) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive {max_consecutive}: must be at least 1")
        self.max_consecutive = max_consecutive
        self._type: str | None = None
        self._count = 0

    def succeeded(self) -> None:
        self._type, self._count = None, 0

    def failed(self, name: str, error: BaseException) -> str | None:
        """Why the run must stop after this failure of the image `name` (None: it goes on)."""
        if is_device_error(error):
            return f"device error on {name}: {_cause(error)}"
        if isinstance(error, InputError):
            return None
        kind = type(error).__name__
        self._count = self._count + 1 if kind == self._type else 1
        self._type = kind
        if self._count >= self.max_consecutive:
            return f"{kind} on {self._count} images in a row (systemic; last {name}: {_cause(error)})"
        return None


class FailureLog:
    """Full tracebacks of failed images, appended to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, name: str, error: BaseException) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        trace = getattr(error, "worker_traceback", None) or "".join(traceback.format_exception(error))
        text = f"== {stamp} {name}\n{trace}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)


@dataclass
class ErrorLog:
    """One line per failed image (`<file>: <cause>`), flushed as it happens."""

    path: Path
    entries: list[tuple[str, str]] = field(default_factory=list)  # (image key, line) as written
    _handle: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path.unlink(missing_ok=True)  # lines of an earlier run would be stale

    def add(self, ref: SampleRef, error: BaseException) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        line = describe_failure(ref, error)
        self._handle.write(line + "\n")
        self._handle.flush()
        self.entries.append((ref.key, line))

    @property
    def count(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def describe_failure(ref: SampleRef, error: BaseException) -> str:
    """One line: our errors already name their file; anything else is prefixed with the image."""
    if isinstance(error, SamRefinerError):
        text = str(error)
    else:
        text = f"{ref.name}: {type(error).__name__}: {error}"
    return " ".join(text.split())


def write_errors(path: Path, failed: list[tuple[str, str]]) -> None:
    """The errors file of the whole run (none when nothing failed, as a single process leaves it)."""
    if not failed:
        path.unlink(missing_ok=True)
        return
    text = "".join(line + "\n" for _key, line in failed)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _cause(error: BaseException) -> str:
    """The exception's first line, at most 200 characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
