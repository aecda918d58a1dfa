"""What counts as "object" in a coarse mask: one rule for mask files and for arrays.

The rule (README "Mask values"):
- bool: True is object.
- one channel (grayscale, palette indices, 16-bit, integer arrays): the mask holds at most one
  nonzero value (0/1, 0/100, 0/255, palette index 0/3, ...); its pixels are the object. The one
  exception is GrabCut's trimap, exactly {0, 128, 255}: 128 (uncertain band) and 255 are object.
- colour files (RGB, RGBA, LA): at most one colour other than black; with an alpha channel a
  fully transparent pixel is background too. The pixels of that colour are the object.
- lossy files (JPEG, WebP): converted to grayscale and thresholded at half their maximum
  (value * 2 >= maximum), with an `InputWarning`.

Anything else (several ids, several colours, a soft or JPEG-noisy array) is never guessed: an
`InputError` names the source and the values found, and points to `--instance-maps` for maps of
object ids. `MaskEncoding` keeps how a file encoded its object, so that outputs are written the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from samrefiner.errors import InputError, InputWarning

TRIMAP = (0, 128, 255)  # GrabCut ground truth: background, uncertain band, object
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
LOSSY_NOTE = "lossy (JPEG) mask, thresholded at half its maximum"
_LISTED = 6  # values or colours named in an error message
INSTANCE_HINT = "for one map of object ids per image, read the folder as instance maps"
ARRAY_HINT = "give bool masks or one value per mask (threshold soft or JPEG-decoded masks first, e.g. mask >= 128)"


@dataclass(frozen=True)
class MaskEncoding:
    """How a mask file wrote its object: PIL mode, object and background pixel, palette."""

    mode: str
    foreground: int | tuple[int, ...]
    background: int | tuple[int, ...] = 0
    palette: list[int] | None = None

    def encode(self, mask: np.ndarray) -> np.ndarray:
        """An array of `mask` in this encoding (for `PIL.Image.fromarray`)."""
        mask = np.asarray(mask, dtype=bool)
        if self.mode == "1":
            return mask
        dtype = {"I;16": np.uint16, "I": np.int32}.get(self.mode, np.uint8)
        foreground = np.asarray(self.foreground, dtype)
        background = np.asarray(self.background, dtype)
        condition = mask[..., None] if foreground.ndim else mask
        return np.where(condition, foreground, background).astype(dtype)


def object_mask(values: np.ndarray, source: str, hint: str = INSTANCE_HINT) -> np.ndarray:
    """The H x W object of a single-channel mask (bool or integer) under the rule above."""
    values = np.asarray(values)
    if values.dtype == bool:
        return values
    if not np.issubdtype(values.dtype, np.integer):
        raise InputError(f"{source}: dtype {values.dtype} is not a mask type; {hint}")
    nonzero = values != 0
    found = values[nonzero]
    if found.size == 0 or (found == found[0]).all():
        return nonzero
    distinct = np.unique(found)
    if distinct.tolist() == list(TRIMAP[1:]):
        return nonzero
    raise InputError(f"{source}: holds {len(distinct)} object values ({_listed(distinct.tolist())}), not one; {hint}")


def colour_object_mask(pixels: np.ndarray, source: str, has_alpha: bool) -> tuple[np.ndarray, tuple, tuple]:
    """The object of an H x W x C colour mask (C = 2 for LA, 3, 4), its colour and its background.

    Background is black (and, with alpha, any fully transparent pixel); the other pixels must
    all have one colour. The background colour returned is the background's own when it has one,
    else zeros.
    """
    channels = pixels.shape[2]
    colour_part = pixels[..., : channels - 1] if has_alpha else pixels
    background = ~colour_part.any(axis=2)
    if has_alpha:
        background |= pixels[..., -1] == 0
    packed = _packed(pixels)
    objects = packed[~background]
    if objects.size and not (objects == objects[0]).all():
        colours = ["#" + "".join(f"{part:02x}" for part in _unpacked(value, channels)) for value in np.unique(objects)]
        raise InputError(
            f"{source}: holds {len(colours)} colours besides black ({_listed(colours)}), not one; {INSTANCE_HINT}"
        )
    rest = packed[background]
    foreground = _unpacked(objects[0], channels) if objects.size else (255,) * channels
    fill = _unpacked(rest[0], channels) if rest.size and (rest == rest[0]).all() else (0,) * channels
    return ~background, tuple(foreground), tuple(fill)


def lossy_object_mask(gray: np.ndarray) -> np.ndarray:
    """A lossy (JPEG) grayscale mask thresholded at half its maximum: value * 2 >= maximum."""
    maximum = int(gray.max(initial=0))
    if maximum == 0:
        return np.zeros(gray.shape, bool)
    return gray.astype(np.int64) * 2 >= maximum


def warn_lossy(source: str) -> None:
    """The InputWarning for one lossy mask file read by `lossy_object_mask`."""
    warnings.warn(InputWarning(f"{source}: {LOSSY_NOTE}"), stacklevel=3)


def _packed(pixels: np.ndarray) -> np.ndarray:
    """Each uint8 pixel of H x W x C (C <= 4) as one integer, for fast equality tests."""
    packed = np.zeros(pixels.shape[:2], np.uint32)
    for channel in range(pixels.shape[2]):
        packed |= pixels[..., channel].astype(np.uint32) << np.uint32(8 * channel)
    return packed


def _unpacked(value: np.integer, channels: int) -> list[int]:
    return [(int(value) >> (8 * channel)) & 0xFF for channel in range(channels)]


def _listed(values: list) -> str:
    shown = ", ".join(str(value) for value in values[:_LISTED])
    return shown + (", ..." if len(values) > _LISTED else "")
