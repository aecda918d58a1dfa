"""Image and mask files: decoding with clear errors, and atomic writes that never clobber input."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samrefiner.errors import InputError

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os has no getter) and put it back

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_WRITE_HOOKS: list[Callable[[Path], None]] = []


def _open(path: str | Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from None
    return image


def read_image(path: str | Path) -> np.ndarray:
    """An H x W x 3 uint8 RGB array (EXIF orientation is ignored, as in the reference)."""
    return np.asarray(_open(path).convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """An H x W bool mask from a 0/1, 0/255 or soft (grey-level) PNG; soft masks split at 128."""
    image = _open(path)
    if image.mode in ("RGBA", "LA"):
        image = image.getchannel("A") if _has_varying_alpha(image) else image.convert("L")
    elif image.mode not in ("L", "1", "P", "I", "I;16"):
        image = image.convert("L")
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(f"{path}: a mask must have one channel, got shape {array.shape}")
    return array > 0 if array.max(initial=0) <= 1 else array >= 128


def _has_varying_alpha(image: Image.Image) -> bool:
    low, high = image.getchannel("A").getextrema()
    return low != high


def write_png(path: str | Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename)."""
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette(palette)
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def atomic_write(path: str | Path, write) -> None:
    """Call `write(binary_file)` on a temporary file next to `path`, then rename it into place."""
    path = Path(path)
    for hook in _WRITE_HOOKS:
        hook(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give outputs the usual mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def announcing_writes(hook: Callable[[Path], None]) -> Iterator[None]:
    """Inside the block, `atomic_write` calls `hook(path)` before it writes each file (a run's journal)."""
    _WRITE_HOOKS.append(hook)
    try:
        yield
    finally:
        _WRITE_HOOKS.remove(hook)
