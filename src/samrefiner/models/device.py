"""Devices: `check_device` checks a device name against this machine before any model is loaded on
it; `make_current` and `synchronizer` keep a thread's CUDA work on the model's GPU.

CUDA's current device is per thread: a thread starts on cuda:0 whatever its parent chose, and
`torch.cuda.synchronize()` without a device waits for the calling thread's current device. So a
CUDA device is always handled with its index (`indexed`), each thread that calls the model makes
that device current (`make_current`), and timing synchronizes that device by name (`synchronizer`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from samrefiner.errors import DeviceError

KNOWN = "cpu, cuda, cuda:N or mps"


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """`device` as a torch.device once this machine is known to have it (a CUDA device with its index:
    plain "cuda" is the current device); else DeviceError, one line that starts with `name` and the
    value (the CLI passes name="--device")."""
    text = str(device)
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"{name} {text}: not a device name (use {KNOWN})") from None
    if parsed.type == "cuda":
        _check_cuda(parsed, f"{name} {text}")
        return indexed(parsed)
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            f"{name} {text}: MPS (Apple GPU) is not available on this machine (torch {torch.__version__})"
        )
    if parsed.type not in ("cpu", "mps"):
        raise DeviceError(f"{name} {text}: samrefiner does not run on {parsed.type} devices (use {KNOWN})")
    return parsed


def _check_cuda(device: torch.device, label: str) -> None:
    if not torch.cuda.is_available():
        built = torch.version.cuda is not None or torch.version.hip is not None
        why = "no GPU visible: check the driver and CUDA_VISIBLE_DEVICES" if built else "a build without CUDA"
        raise DeviceError(f"{label}: CUDA is not available on this machine (torch {torch.__version__}, {why})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"{label}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


def indexed(device: torch.device) -> torch.device:
    """A CUDA device with its index (an index-less one is the calling thread's current device); others as given."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def cuda_device(model: Any) -> torch.device | None:
    """The CUDA device `model` runs on, with its index (see `indexed`); None when it does not run on CUDA."""
    device = getattr(model, "device", None)
    if device is None or torch.device(device).type != "cuda":
        return None
    return indexed(torch.device(device))


def make_current(device: torch.device | None) -> None:
    """Make `device` (a CUDA device with its index) the calling thread's current CUDA device
    (torch.cuda.set_device): what allocates on "the" GPU in this thread then uses it, not cuda:0.
    Nothing for None or another device type."""
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)


def synchronizer(device: torch.device | None) -> Callable[[], None] | None:
    """What waits for `device`'s queued work, from any thread: torch.cuda.synchronize of that device
    (by index, not the calling thread's current one); None for None or a device that needs no waiting."""
    if device is None or device.type != "cuda":
        return None
    return functools.partial(torch.cuda.synchronize, indexed(device))
