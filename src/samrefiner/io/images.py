"""Image and mask files: decoding with clear errors, and atomic writes that never clobber input.

Images and masks are read upright, as viewers show them: an EXIF orientation tag is applied (as
OpenCV's imread does), unless `ignore_exif` keeps the stored pixel order. Mask values follow
the rule of `samrefiner.io.maskvalues`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samrefiner.errors import InputError
from samrefiner.io.maskvalues import (
    LOSSY_SUFFIXES,
    MaskEncoding,
    colour_object_mask,
    lossy_object_mask,
    object_mask,
    warn_lossy,
)

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os has no getter) and put it back

_ORIENTATION = 0x0112  # the EXIF tag
_SINGLE_CHANNEL = ("L", "P", "I")  # and the 16-bit modes "I;16*"
_COLOUR = {"RGB": False, "RGBA": True, "LA": True}  # mode -> has alpha

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


def read_image(path: str | Path, *, ignore_exif: bool = False) -> np.ndarray:
    """An H x W x 3 uint8 RGB array, upright (EXIF orientation applied) unless `ignore_exif`;
    high-depth images scaled to 8 bit by `eight_bit`."""
    return np.asarray(eight_bit(_upright(_open(path), ignore_exif), path).convert("RGB"))


def eight_bit(image: Image.Image, source: str | Path) -> Image.Image:
    """The image with 8 bits per channel, as OpenCV's imread gives it: a 16-bit value v becomes
    v >> 8 (its high byte; Pillow would clip it to 255); a 32-bit integer image must hold 16-bit
    values (0-65535), scaled the same way; a floating-point image is refused (InputError).
    16-bit colour PNGs already come from Pillow as their high bytes."""
    if image.mode == "F":
        raise InputError(f"{source}: a floating-point image; save it with 8 or 16 bits per channel")
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image)
    if values.size and (values.min() < 0 or values.max() > 0xFFFF):
        raise InputError(
            f"{source}: a 32-bit image with values {values.min()}-{values.max()}, outside 16 bits (0-65535)"
        )
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L")


def read_mask(path: str | Path, *, ignore_exif: bool = False) -> np.ndarray:
    """An H x W bool mask under the mask-value rule (`samrefiner.io.maskvalues`)."""
    return read_mask_encoded(path, ignore_exif=ignore_exif)[0]


def read_mask_encoded(
    path: str | Path, *, ignore_exif: bool = False, warn: bool = True
) -> tuple[np.ndarray, MaskEncoding]:
    """The H x W bool mask of a mask file and how the file encoded its object.

    A lossy file (.jpg, .jpeg, .webp) is thresholded at half its maximum, with an InputWarning
    unless `warn` is False; its encoding is 0/255 grayscale.
    """
    image = _upright(_open(path), ignore_exif)
    source = str(path)
    if Path(path).suffix.lower() in LOSSY_SUFFIXES:
        if warn:
            warn_lossy(source)
        return lossy_object_mask(np.asarray(image.convert("L"))), MaskEncoding("L", 255)
    if image.mode == "1":
        return np.asarray(image), MaskEncoding("1", 1)
    if image.mode in _SINGLE_CHANNEL or image.mode.startswith("I;16"):
        values = np.asarray(image)
        mask = object_mask(values, source)
        default = 1 if image.mode == "P" else 255
        foreground = int(values.max()) if mask.any() else default
        palette = image.getpalette() if image.mode == "P" else None
        mode = "I;16" if image.mode.startswith("I;16") else image.mode
        return mask, MaskEncoding(mode, foreground, 0, palette)
    if image.mode == "F":
        raise InputError(f"{source}: a floating-point image is not a mask; save it as 0/255 PNG")
    if image.mode not in _COLOUR:
        image = image.convert("RGBA" if "A" in image.mode or "a" in image.mode else "RGB")
    mask, foreground, background = colour_object_mask(np.asarray(image), source, _COLOUR[image.mode])
    return mask, MaskEncoding(image.mode, foreground, background)


def _upright(image: Image.Image, ignore_exif: bool) -> Image.Image:
    """The image as viewers show it: its EXIF orientation applied (unless `ignore_exif`)."""
    if ignore_exif or image.getexif().get(_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


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
    short = os.fsencode(path.name)[:200].decode(errors="ignore")  # room for the 14 bytes added: any name works
    fd, tmp = tempfile.mkstemp(prefix=f".{short}.", suffix=".tmp", dir=path.parent)
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
