"""Devices: `--device cuda` on a machine without CUDA (or a device name that is not one) is one line
and exit 2 in refine, bench and adapt, and a DeviceError from `load_model`; never a traceback. On a
GPU machine (CUDA faked faithfully, tests/cuda_fake.py) the default device is an indexed one and
runs, every thread that calls the model uses the process's GPU, and torchrun with more processes
than GPUs is one line."""

from __future__ import annotations

import pytest
import torch

from conftest import SAM_REF
from cuda_fake import FakeCuda, fake_load_model
from samrefiner import load_model
from samrefiner.cli import main
from samrefiner.commands.options import build_refiner
from samrefiner.errors import DeviceError, SamRefinerError
from samrefiner.models.device import check_device
from samrefiner.run.distributed import Ranks, process_device

MODEL = str(SAM_REF / "reduced_sam.pth")


@pytest.fixture()
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture()
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_load_model_on_missing_cuda_is_a_device_error(no_cuda, device):
    with pytest.raises(DeviceError) as error:
        load_model(MODEL, device=device)
    assert issubclass(DeviceError, SamRefinerError)
    assert str(error.value).startswith(
        f"device {device}: CUDA is not available on this machine (torch {torch.__version__}, "
    )


@pytest.mark.parametrize(
    "device, cause",
    [
        ("gpu", "not a device name (use cpu, cuda, cuda:N or mps)"),
        ("cuda:x", "not a device name (use cpu, cuda, cuda:N or mps)"),
        ("meta", "samrefiner does not run on meta devices (use cpu, cuda, cuda:N or mps)"),
    ],
)
def test_invalid_device_names(device, cause):
    with pytest.raises(DeviceError) as error:
        load_model(MODEL, device=device)
    assert str(error.value) == f"device {device}: {cause}"


def test_gpu_index_beyond_the_machine(two_gpus):
    assert check_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError) as error:
        check_device("cuda:2", name="--device")
    assert str(error.value) == "--device cuda:2: this machine has 2 CUDA device(s), cuda:0 to cuda:1"


def test_cpu_is_accepted():
    assert check_device("cpu") == torch.device("cpu")
    assert load_model(MODEL, device="cpu").device == torch.device("cpu")


COMMANDS = {
    "refine": lambda images, masks, out: ["refine", "--images", images, "--masks", masks, "--out", out],
    "bench": lambda images, masks, out: ["bench", "--images", images, "--gt", masks, "--coarse", masks, "--json", out],
    "adapt": lambda images, masks, out: ["adapt", "--images", images, "--masks", masks, "--out", out],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "gpu"])
def test_cli_device_error_is_one_line(no_cuda, capsys, one_image, tmp_path, command, device):
    images, masks = one_image
    out = tmp_path / "out.safetensors"
    args = [str(part) for part in COMMANDS[command](images, masks, out)]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--model", MODEL, "--device", device])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    expected = (
        f"samrefiner: error: --device {device}: CUDA is not available on this machine (torch {torch.__version__}, "
        if device.startswith("cuda")
        else f"samrefiner: error: --device {device}: not a device name (use cpu, cuda, cuda:N or mps)"
    )
    assert lines[0].startswith(expected)
    assert not out.exists()


# --- the CLI on a GPU machine, CUDA faked faithfully (tests/cuda_fake.py) ---


@pytest.fixture()
def fake_cuda(monkeypatch, reduced_model):
    """A machine with two GPUs whose model computes on the CPU (cuda:K -> cpu where the model is loaded)."""
    cuda = FakeCuda(2).install(monkeypatch)
    monkeypatch.setattr("samrefiner.load_model", fake_load_model(cuda, lambda spec, device: reduced_model))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return cuda


def _refine(capsys, one_image, tmp_path, *options: str) -> tuple[int, str, str]:
    images, masks = one_image
    args = ["refine", "--images", images, "--masks", masks, "--out", tmp_path / "out", "--model", MODEL]
    with pytest.raises(SystemExit) as stop:
        main([*map(str, args), "--iterations", "1", "--no-progress", *options])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


@pytest.mark.parametrize("device", [None, "auto", "cuda"])
def test_default_and_plain_cuda_run_on_gpu_0(fake_cuda, capsys, one_image, tmp_path, device):
    """A single-GPU run with no --device, --device auto or --device cuda: cuda:0, made current, and it runs."""
    fake_cuda.count = 1
    code, out, err = _refine(capsys, one_image, tmp_path, *(["--device", device] if device else []))
    assert code == 0, err
    assert out.startswith("1 images, 1 objects refined") and (tmp_path / "out" / "fullmoon.png").is_file()
    assert fake_cuda.loaded_on == ["cuda:0"]
    assert [call[1:] for call in fake_cuda.calls if call[1] == "set_device"] == [("set_device", 0)]
    assert fake_cuda.devices("encode") == fake_cuda.devices("decode") == fake_cuda.devices("synchronize") == {0}


@pytest.mark.parametrize("workers", [0, 1])
def test_every_thread_that_calls_the_model_uses_the_process_gpu(fake_cuda, capsys, one_image, tmp_path, workers):
    """--device cuda:1 (with --workers: the model is called from the overlap threads, which start on
    cuda:0): every model call runs with cuda:1 current, and timing synchronizes cuda:1."""
    code, _out, err = _refine(capsys, one_image, tmp_path, "--device", "cuda:1", "--workers", str(workers))
    assert code == 0, err
    assert fake_cuda.loaded_on == ["cuda:1"]
    for call in ("encode", "decode", "upscale", "set_device", "synchronize"):
        assert fake_cuda.devices(call) == {1}, (call, fake_cuda.calls)
    callers = fake_cuda.threads("encode") | fake_cuda.threads("decode")
    assert all(thread.startswith("samrefiner-refine") for thread in callers) == bool(workers), callers
    assert callers <= fake_cuda.threads("set_device")  # each of them made cuda:1 current


def test_torchrun_with_more_processes_than_gpus_is_one_line(fake_cuda, monkeypatch, capsys, one_image, tmp_path):
    for name, value in {"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "3"}.items():
        monkeypatch.setenv(name, value)
    code, _out, err = _refine(capsys, one_image, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err == (
        "samrefiner: error: --device auto: torchrun process LOCAL_RANK 2 has no GPU of its own: this machine has "
        "2 CUDA device(s), so start at most 2 processes per node (or name one device, cuda:N, for the processes "
        "to share)\n"
    )
    assert fake_cuda.calls == [] and not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize(
    "requested, ranks, expected",
    [
        ("cuda", Ranks(1, 2, 1), "cuda:1"),  # torchrun: this rank's GPU
        ("auto", Ranks(5, 8, 1), "cuda:1"),
        ("cuda:0", Ranks(2, 3, 2), "cuda:0"),  # named: every rank shares it
        ("cuda", Ranks(), "cuda:0"),  # outside torchrun: the current device
        ("cpu", Ranks(1, 2, 1), "cpu"),
    ],
)
def test_each_process_gets_an_indexed_device(fake_cuda, requested, ranks, expected):
    assert process_device(requested, ranks) == torch.device(expected)


def test_under_torchrun_this_ranks_gpu_is_made_current_before_the_model_loads(fake_cuda):
    refiner = build_refiner(MODEL, "cuda", {}, ranks=Ranks(3, 4, 1))
    assert refiner.model.device == torch.device("cuda", 1) and fake_cuda.loaded_on == ["cuda:1"]
    assert fake_cuda.calls == [("MainThread", "set_device", 1)]
