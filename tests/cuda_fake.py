"""CUDA on a CPU machine, as strict about devices as the real one, for the device paths of the CLI.

`FakeCuda(count).install(monkeypatch)` makes torch.cuda report `count` GPUs and replaces
`set_device`, `current_device` and `synchronize` with stand-ins that parse their argument with
torch's own `_get_device_index`, so they reject what the real ones reject (an index-less
`torch.device("cuda")` in `set_device`, a CPU device, an index beyond the GPUs), keep the current
device per thread as CUDA does (a new thread starts on 0), and record which device each thread
asked for. `OnFakeGpu` is where cuda:K meets the CPU: the model says it is on cuda:K (what the code
under test sees) and computes on the CPU; each of its calls records the calling thread's current
device. `fake_load_model` is `load_model` at that boundary.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.cuda._utils import _get_device_index

import samrefiner.models


@dataclass
class FakeCuda:
    count: int
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (thread name, what, device index)
    loaded_on: list[str] = field(default_factory=list)  # the device each load_model call was given
    _thread: threading.local = field(default_factory=threading.local)

    def install(self, monkeypatch: Any) -> FakeCuda:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "current_device", self.current_device)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "synchronize", self.synchronize)
        return self

    def current_device(self) -> int:
        return getattr(self._thread, "index", 0)

    def set_device(self, device: Any) -> None:
        index = _get_device_index(device)  # ValueError for torch.device("cuda"), as torch.cuda.set_device raises
        if index >= self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        if index >= 0:
            self._thread.index = index
            self.record("set_device", index)

    def synchronize(self, device: Any = None) -> None:
        index = _get_device_index(device, optional=True)  # None or index-less: this thread's current device
        if index >= self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        self.record("synchronize", index)

    def record(self, what: str, index: int) -> None:
        self.calls.append((threading.current_thread().name, what, index))

    def devices(self, what: str) -> set[int]:
        """The devices of every `what` call ("set_device", "synchronize", "encode", ...), any thread."""
        return {index for _, name, index in self.calls if name == what}

    def threads(self, what: str) -> set[str]:
        return {thread for thread, name, _ in self.calls if name == what}


class OnFakeGpu:
    """`model` (on the CPU) as a model on `device`: its `device` is the GPU; each model call records
    the calling thread's current CUDA device."""

    MODEL_CALLS = ("encode", "decode", "upscale")

    def __init__(self, model: Any, device: torch.device, cuda: FakeCuda) -> None:
        self._model, self.device, self._cuda = model, device, cuda

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if name not in self.MODEL_CALLS:
            return value

        def called(*args: Any, **kwargs: Any) -> Any:
            self._cuda.record(name, self._cuda.current_device())
            return value(*args, **kwargs)

        return called


def fake_load_model(cuda: FakeCuda, load_on_cpu: Any = samrefiner.models.load_model) -> Any:
    """`load_model(spec, device)` that checks `device` as the real one does and computes on the CPU."""
    from samrefiner.models.device import check_device

    def load(spec: Any, device: Any = "cpu") -> Any:
        cuda.loaded_on.append(str(device))
        placed = check_device(device)
        model = load_on_cpu(spec, device="cpu")
        return OnFakeGpu(model, placed, cuda) if placed.type == "cuda" else model

    return load
