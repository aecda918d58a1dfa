"""Devices: `--device cuda` on a machine without CUDA (or a device name that is not one) is one line
and exit 2 in refine, bench and adapt, and a DeviceError from `load_model`; never a traceback."""

from __future__ import annotations

import pytest
import torch
from conftest import SAM_REF

from samrefiner import load_model
from samrefiner.cli import main
from samrefiner.errors import DeviceError, SamRefinerError
from samrefiner.models.device import check_device

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
    assert str(error.value).startswith(f"device {device}: CUDA is not available on this machine (torch {torch.__version__}, ")


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
