"""COCO run-length encoding of masks (pycocotools' compressed RLE, JSON-ready)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an H x W mask, with `counts` as a str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}
