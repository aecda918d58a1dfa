"""`check_device`: a device name checked against this machine before any model is loaded on it."""

from __future__ import annotations

import torch

from samrefiner.errors import DeviceError

KNOWN = "cpu, cuda, cuda:N or mps"


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """`device` as a torch.device once this machine is known to have it; else DeviceError, one line
    that starts with `name` and the value (the CLI passes name="--device")."""
    text = str(device)
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"{name} {text}: not a device name (use {KNOWN})") from None
    if parsed.type == "cuda":
        _check_cuda(parsed, f"{name} {text}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{name} {text}: MPS (Apple GPU) is not available on this machine (torch {torch.__version__})")
    elif parsed.type not in ("cpu", "mps"):
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
