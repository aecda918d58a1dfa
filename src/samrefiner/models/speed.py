"""Speed settings of the model backends: autocast precision and objects per decoder call.

- Precision: "auto" runs the model calls under bf16 autocast on CUDA (fp16 on GPUs without native
  bf16) and in fp32 everywhere else; "fp32", "bf16" and "fp16" force one. Outputs (embeddings,
  logits, scores) are always returned as float32; upscaling and thresholding stay in float32.
- Objects per decoder call: at most the refiner's `chunk_size`; on CUDA no more than half the free
  memory holds; on CPU one, whose working set (a few 4 MiB image-token tensors) stays in cache:
  measured fastest at 1 and 2 threads (`bench/throughput.py --decode-batches 1,4,16`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from samrefiner.errors import InputError
from samrefiner.types import PRECISIONS, Precision

CPU_DECODE_BATCH = 1
DECODE_BYTES_PER_OBJECT = 48 << 20  # fp32 working set of one object in the decoder (measured ~25-35 MiB)
DECODE_MEMORY_SHARE = 0.5  # of the free device memory, for one decoder call

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: plain float32)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return _DTYPES[precision]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast on `device` with `dtype`, or nothing for float32."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def decode_batch(device: torch.device, chunk_size: int, cpu_batch: int = CPU_DECODE_BATCH) -> int:
    """Objects per decoder call on `device`: at most `chunk_size` (see the module docstring)."""
    if device.type == "cpu":
        return max(1, min(chunk_size, cpu_batch))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return max(1, min(chunk_size, int(free * DECODE_MEMORY_SHARE) // DECODE_BYTES_PER_OBJECT))
    return chunk_size
