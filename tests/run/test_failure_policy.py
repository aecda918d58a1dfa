"""Failure policy, summary honesty, shards' errors files, --limit and the current GPU under torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from test_io_runner import make_dataset, spy_on_writes
from test_run_manifest import ModelRefiner, run_cli

import samrefiner.commands.refine as refine_module
from conftest import REPO
from io_fakes import IdentityRefiner, fake_result
from samrefiner.config import RefinerConfig
from samrefiner.io.masks import MaskFolders
from samrefiner.run.distributed import Ranks, run_ranks
from samrefiner.run.runner import run
from samrefiner.run.shards import Shard


class FailingRefiner(IdentityRefiner):
    """Raises `errors[n]` on its n-th call (0-based); refines the other images unchanged."""

    def __init__(self, errors: dict[int, BaseException]) -> None:
        super().__init__()
        self.errors = errors

    def refine(self, image, masks):
        call = len(self.calls)
        self.calls.append(masks.shape)
        if call in self.errors:
            raise self.errors[call]
        return fake_result(masks)


def broken_model_call():
    raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


class BrokenRefiner(IdentityRefiner):
    def refine(self, image, masks):
        self.calls.append(masks.shape)
        broken_model_call()


def scores_keys(out):
    return [json.loads(line)["image"] for line in (out / "scores.jsonl").read_text().splitlines()]


def test_the_same_error_on_five_images_in_a_row_stops_the_run_with_tracebacks(tmp_path):
    images, masks = make_dataset(tmp_path, count=8)
    out = tmp_path / "out"
    refiner = FailingRefiner({index: RuntimeError(f"boom {index}") for index in range(2, 8)})
    summary = run(MaskFolders(images, masks, out), refiner, progress=False)

    assert len(refiner.calls) == 7  # img0, img1 refined; img2..img6 failed; img7 never started
    assert summary.stopped == (
        f"RuntimeError on 5 images in a row (systemic; last {masks / 'img6'}: RuntimeError: boom 6)"
    )
    assert (summary.images, summary.failures) == (2, 5)
    assert scores_keys(out) == ["img0", "img1"]  # finished work merged
    log = (out / ".samrefiner" / "failures.log").read_text()
    assert log.count("Traceback (most recent call last)") == 5 and "RuntimeError: boom 6" in log
    assert len((out / "errors.txt").read_text().splitlines()) == 5


def test_the_traceback_names_the_failing_call(tmp_path):
    images, masks = make_dataset(tmp_path, count=2)
    run(MaskFolders(images, masks, tmp_path / "out"), BrokenRefiner(), progress=False)
    log = (tmp_path / "out" / ".samrefiner" / "failures.log").read_text()
    assert "in broken_model_call" in log and "mat1 and mat2 shapes cannot be multiplied" in log


def test_max_consecutive_failures_sets_the_row(tmp_path):
    images, masks = make_dataset(tmp_path, count=6)
    refiner = FailingRefiner({index: ValueError("bad") for index in range(6)})
    summary = run(MaskFolders(images, masks, tmp_path / "out"), refiner, progress=False, max_consecutive_failures=2)
    assert len(refiner.calls) == 2 and summary.stopped.startswith("ValueError on 2 images in a row")


def test_other_error_types_and_refined_images_break_the_row(tmp_path):
    images, masks = make_dataset(tmp_path, count=8)
    kinds = [RuntimeError, RuntimeError, ValueError, RuntimeError, RuntimeError, None, RuntimeError, RuntimeError]
    refiner = FailingRefiner({index: kind("x") for index, kind in enumerate(kinds) if kind})
    summary = run(MaskFolders(images, masks, tmp_path / "out"), refiner, progress=False, max_consecutive_failures=3)
    assert summary.stopped is None and (summary.images, summary.failures) == (1, 7)


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: device-side assert triggered"),
        RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
    ],
)
def test_a_device_error_stops_at_once_and_the_run_resumes(tmp_path, error):
    images, masks = make_dataset(tmp_path)
    out = tmp_path / "out"
    refiner = FailingRefiner({2: error})
    summary = run(MaskFolders(images, masks, out), refiner, progress=False)
    assert len(refiner.calls) == 3
    assert summary.stopped.startswith(f"device error on {masks / 'img2'}: {type(error).__name__}: ")
    assert scores_keys(out) == ["img0", "img1"]

    dataset = MaskFolders(images, masks, out)
    written = spy_on_writes(dataset)
    summary = run(dataset, IdentityRefiner(), resume=True, progress=False)
    assert written == ["img2", "img3", "img4", "img5"] and summary.stopped is None
    assert scores_keys(out) == [f"img{index}" for index in range(6)]


def test_bad_inputs_in_a_row_never_stop_the_run(tmp_path):
    images, masks = make_dataset(tmp_path, count=9)
    for index in range(1, 8):
        (images / f"img{index}.png").write_bytes(b"not an image")
    refiner = FailingRefiner({1: RuntimeError("x")})  # seven bad inputs in a row: no stop at a row of 2
    summary = run(MaskFolders(images, masks, tmp_path / "out"), refiner, progress=False, max_consecutive_failures=2)
    assert summary.stopped is None and (summary.images, summary.failures) == (1, 8)

    refiner = FailingRefiner({0: RuntimeError("x"), 1: RuntimeError("y")})
    summary = run(MaskFolders(images, masks, tmp_path / "out2"), refiner, progress=False, max_consecutive_failures=2)
    assert summary.stopped.startswith("RuntimeError on 2 images in a row")  # img0, 7 bad inputs, img8: one row


def test_the_cli_exits_3_with_one_line_and_keeps_finished_work(tmp_path, capsys, monkeypatch):
    images, masks = make_dataset(tmp_path)
    out = tmp_path / "out"

    class OutOfMemoryOnThird(ModelRefiner):
        def refine(self, image, masks):
            if len(self.calls) == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return super().refine(image, masks)

    monkeypatch.setattr(refine_module, "build_refiner", lambda spec, *a, **k: OutOfMemoryOnThird(spec, RefinerConfig()))
    code, stdout, err = run_cli(capsys, monkeypatch, "--images", images, "--masks", masks, "--out", out, "--model", "m")
    assert code == 3
    assert err == (
        f"samrefiner: error: run stopped: device error on {masks / 'img2'}: OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 20.00 GiB; finished work kept, --resume continues\n"
    )
    assert stdout.startswith("2 images, 4 objects refined") and "1 failed" in stdout
    assert scores_keys(out) == ["img0", "img1"]


class EmptyingRefiner(IdentityRefiner):
    """Empties the output of every mask named b.png; flags it as SAMRefiner does (coarse mask kept)."""

    def refine(self, image, masks):
        result = super().refine(image, masks)
        result.empty_output = ~result.empty_input & (np.arange(len(masks)) == 1)
        return result


def test_empty_coarse_masks_and_empty_outputs_are_not_counted_as_refined(tmp_path):
    images, masks = make_dataset(tmp_path, count=3)
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(masks / "img0" / "a.png")  # an empty coarse mask
    summary = run(MaskFolders(images, masks, tmp_path / "out"), EmptyingRefiner(), progress=False)
    assert (summary.images, summary.objects, summary.empty_inputs, summary.empty_outputs) == (3, 2, 1, 3)
    assert str(summary).startswith(
        "3 images, 2 objects refined (1 empty coarse mask kept, 3 empty outputs kept coarse) in "
    )
    lines = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    flags = [(obj["id"], obj["empty_input"], obj["empty_output"]) for line in lines for obj in line["objects"]]
    assert flags[:2] == [("a.png", True, False), ("b.png", False, True)]


def test_an_explicit_errors_file_is_kept_per_shard(tmp_path):
    images, masks = make_dataset(tmp_path)
    for index in (0, 1):
        (images / f"img{index}.png").write_bytes(b"broken")
    errors = tmp_path / "failed.txt"
    for index in (0, 1):
        dataset = MaskFolders(images, masks, tmp_path / "out")
        run_ranks(dataset, IdentityRefiner(), Ranks(), shard=Shard(index, 2), errors_path=errors, progress=False)
    assert (tmp_path / "failed.shard-0-of-2.txt").read_text().startswith(str(images / "img0.png"))
    assert (tmp_path / "failed.shard-1-of-2.txt").read_text().startswith(str(images / "img1.png"))


def test_limit_is_the_first_images_of_the_shard_selection(tmp_path):
    images, masks = make_dataset(tmp_path)
    dataset = MaskFolders(images, masks, tmp_path / "out")
    written = spy_on_writes(dataset)
    run_ranks(dataset, IdentityRefiner(), Ranks(), shard=Shard(1, 2), limit=2, progress=False)
    assert written == ["img1", "img3"]


def test_max_consecutive_failures_must_be_positive():
    from samrefiner.run.failures import FailurePolicy

    with pytest.raises(ValueError, match="max_consecutive 0: must be at least 1") as refused:
        FailurePolicy(0)
    assert "--" not in str(refused.value)  # the library names no option (the CLI refuses 0 itself)


RANK_RUN = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from io_fakes import IdentityRefiner
    from samrefiner.run.distributed import Ranks, run_ranks
    from samrefiner.errors import InputError
    from samrefiner.io.masks import MaskFolders
    from samrefiner.run.manifest import new_manifest

    root, iterations = Path(sys.argv[1]), int(sys.argv[2])
    ranks = Ranks.from_env()

    class Refiner(IdentityRefiner):
        def refine(self, image, masks):
            if ranks.rank == 1 and len(self.calls) == 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            time.sleep(0.5 * (ranks.rank == 0))
            return super().refine(image, masks)

    dataset = MaskFolders(root / "images", root / "masks", root / "out")
    try:
        summary = run_ranks(dataset, Refiner(), ranks, progress=False, manifest=new_manifest(iterations=iterations))
    except InputError as error:
        print(json.dumps({"refused": str(error)}))
    else:
        print(json.dumps({"images": summary.images, "stopped": summary.stopped}))
    """
)


def run_two_ranks(root, iterations: int) -> list[dict]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]), OMP_NUM_THREADS="1")
    base.update(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_RUN, str(root), str(iterations)],
            env=dict(base, RANK=str(rank), LOCAL_RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in ranks]
    assert all(process.returncode == 0 for process in ranks), [err for _, err in outputs]
    return [json.loads(out.splitlines()[-1]) for out, _ in outputs]


def test_torchrun_ranks_stop_together_and_check_rank_zeros_manifest(tmp_path):
    images, masks = make_dataset(tmp_path, count=10)  # rank 0: img0, img2, ... img8; rank 1: img1, img3, ...
    first = run_two_ranks(tmp_path, iterations=1)

    cause = f"device error on {masks / 'img3'}: OutOfMemoryError: CUDA out of memory. Tried to allocate 9.00 GiB"
    assert [summary["stopped"] for summary in first] == [cause, cause]  # rank 0 stopped too, on rank 1's cause
    done = first[0]["images"]  # both ranks report the whole run
    assert first[1]["images"] == done and done < 6  # rank 0 stopped before its last image (0.5 s each)
    expected = sorted([f"img{2 * index}" for index in range(done - 1)] + ["img1"], key=lambda key: int(key[3:]))
    assert scores_keys(tmp_path / "out") == expected  # finished work of both ranks merged
    assert not (tmp_path / "out" / ".samrefiner" / "stop").exists()

    second = run_two_ranks(tmp_path, iterations=2)
    assert [summary["refused"] for summary in second] == [
        f"{tmp_path / 'out'}: holds another run's results (iterations (1 -> 2))"
    ] * 2  # the library's line; `samrefiner refine` adds the options that resolve it
    assert scores_keys(tmp_path / "out") == expected


def test_malformed_inputs_in_a_row_never_stop_the_run(tmp_path, monkeypatch):
    """Reading raises a raw exception (what a malformed annotation value gave, e.g. KeyError) for six
    images in a row: each is that image's input error, recorded, and the run goes on to refine the
    rest (it stopped as "systemic" after the second, here)."""
    images, masks = make_dataset(tmp_path, count=9)
    load = MaskFolders.load
    bad = {f"img{index}": KeyError("size") for index in range(1, 7)}

    def malformed(self, ref):
        if ref.key in bad:
            raise bad[ref.key]
        return load(self, ref)

    monkeypatch.setattr(MaskFolders, "load", malformed)
    summary = run(
        MaskFolders(images, masks, tmp_path / "out"), IdentityRefiner(), progress=False, max_consecutive_failures=2
    )
    assert summary.stopped is None
    assert (summary.images, summary.failures) == (3, 6)
    assert scores_keys(tmp_path / "out") == ["img0", "img7", "img8"]
    lines = (tmp_path / "out" / "errors.txt").read_text().splitlines()
    assert lines[0] == f"{masks / 'img1'}: KeyError: 'size'" and len(lines) == 6  # the same line as before
    assert "KeyError: 'size'" in (tmp_path / "out" / ".samrefiner" / "failures.log").read_text()  # the original trace
