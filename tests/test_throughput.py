"""Speed machinery: the fused decoder against transformers', precision and compile options, objects
per decoder call, stage timing, the background loader, threaded mining, and bounded memory."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, REPO, SAM_REF
from samrefiner import Refiner, RefinerConfig
from samrefiner.commands.options import build_refiner
from samrefiner.errors import InputError
from samrefiner.io.datasets import Sample, SampleRef
from samrefiner.io.labelmaps import LabelMaps
from samrefiner.mining import mine_in_threads
from samrefiner.models import speed
from samrefiner.models.base import Encoding
from samrefiner.prompts import PromptMiner
from samrefiner.run.loader import load_in_background, load_in_order
from samrefiner.run.runner import run
from samrefiner.timing import MODEL_STAGES, StageTimes, recording, stage

COCO_STUFF = DATA / "coco_stuff"


@pytest.fixture(scope="module")
def sam(reduced_model):
    return reduced_model


def random_prompts(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Prompts as the backend hands them to one decoder call (input frame, objects in the batch)."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(count, 2, 2, generator=generator).sort(dim=1).values * 1000
    return {
        "points": torch.rand(count, 1, 2, 2, generator=generator) * 1000,
        "labels": torch.tensor([[1, 0], [1, -1]]).repeat(count, 1)[:count, None],
        "boxes": corners.reshape(count, 1, 4),
        "masks": torch.randn(count, 1, 256, 256, generator=generator) * 20,
    }


@pytest.mark.parametrize(
    "switched_off", [(), ("masks",), ("points", "labels"), ("boxes",), ("points", "labels", "boxes")]
)
def test_fused_decoder_computes_what_transformers_computes(sam, switched_off) -> None:
    prompts = {name: None if name in switched_off else value for name, value in random_prompts(3).items()}
    embeddings = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    fused = sam._fused
    try:
        with torch.inference_mode():
            logits, iou = fused(embeddings, *prompts.values())
            sam._fused = None  # transformers' SamPromptEncoder + SamMaskDecoder
            encoding = Encoding(embeddings, (1024, 1024), (1024, 1024))
            expected_logits, expected_iou = sam._decode_chunk(encoding, *prompts.values())
    finally:
        sam._fused = fused
    assert logits.shape == expected_logits.shape == (3, 3, 256, 256)
    scale = expected_logits.abs().max().item()
    assert (logits - expected_logits).abs().max().item() < 1e-5 * max(scale, 1.0)
    np.testing.assert_allclose(iou.numpy(), expected_iou.numpy(), atol=1e-6)


def test_attention_goes_through_pytorch_sdpa(sam) -> None:
    assert sam.model.config._attn_implementation == "sdpa"
    assert type(sam.model.vision_encoder.layers[0].attn).__name__ == "SamVisionSdpaAttention"


def test_precision_is_fp32_on_cpu_and_bf16_by_default_on_cuda(monkeypatch) -> None:
    assert speed.autocast_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert speed.autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert speed.autocast_dtype("auto", torch.device("cuda")) is torch.float16
    assert speed.autocast_dtype("fp16", torch.device("cpu")) is torch.float16
    assert speed.autocast_dtype("fp32", torch.device("cuda")) is None
    with pytest.raises(InputError, match="precision 'half'"):
        speed.autocast_dtype("half", torch.device("cpu"))


def test_cli_options_reach_the_backend_and_bf16_stays_close(sam) -> None:
    model_path = str(SAM_REF / "reduced_sam.pth")
    assert build_refiner(model_path, "cpu", {}).model.autocast_dtype is None
    refiner = build_refiner(model_path, "cpu", {}, precision="bf16")
    assert refiner.model.autocast_dtype is torch.bfloat16
    with pytest.raises(InputError, match="--precision"):
        build_refiner(model_path, "cpu", {}, precision="int8")
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3)), dtype=np.uint8)
    fp32, bf16 = sam.encode(image), refiner.model.encode(image)
    assert bf16.embeddings.dtype == torch.float32  # outputs stay float32 under autocast
    assert torch.nn.functional.cosine_similarity(fp32.embeddings.flatten(), bf16.embeddings.flatten(), dim=0) > 0.99
    boxes = np.array([[10.0, 10.0, 60.0, 50.0], [0.0, 40.0, 120.0, 90.0]])
    decoded = refiner.model.decode(fp32, None, None, boxes, None)
    assert decoded.low_res_logits.dtype == decoded.iou_scores.dtype == torch.float32
    # the decoder ran in bf16: close to fp32, yet not bit-equal
    reference = sam.decode(fp32, None, None, boxes, None)
    logits, expected = decoded.low_res_logits.flatten(1), reference.low_res_logits.flatten(1)
    assert not torch.equal(logits, expected)
    assert torch.nn.functional.cosine_similarity(logits, expected, dim=1).min() > 0.99
    assert ((logits > 0) == (expected > 0)).float().mean(dim=1).min() > 0.98
    assert (decoded.iou_scores - reference.iou_scores).abs().max() < 0.05


def test_compile_option_compiles_and_runs_the_encoder_and_the_decoder(sam, monkeypatch) -> None:
    """Both compiled modules run through TorchDynamo and give the uncompiled outputs. Dynamo's
    eager backend stands in for inductor here: inductor's C++ code generation alone took over
    six minutes for the decoder on the shared test CPU."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    refiner = build_refiner(str(SAM_REF / "reduced_sam.pth"), "cpu", {}, compile_model=True)
    model = refiner.model
    assert model.model.vision_encoder._compiled_call_impl is not None
    assert model._fused._compiled_call_impl is not None
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3)), dtype=np.uint8)
    encoding = model.encode(image)
    expected = sam.encode(image)
    assert torch.equal(encoding.embeddings, expected.embeddings)
    boxes = np.array([[10.0, 10.0, 60.0, 50.0]])
    decoded, reference = model.decode(expected, None, None, boxes, None), sam.decode(expected, None, None, boxes, None)
    assert torch.equal(decoded.low_res_logits, reference.low_res_logits)
    assert torch.equal(decoded.iou_scores, reference.iou_scores)
    assert counters["stats"]["unique_graphs"] >= 2  # the encoder's and the decoder's graphs were captured
    torch._dynamo.reset()


def test_objects_per_decoder_call_follow_the_device(monkeypatch) -> None:
    assert speed.decode_batch(torch.device("cpu"), 64) == speed.CPU_DECODE_BATCH == 1
    assert speed.decode_batch(torch.device("cpu"), 64, cpu_batch=8) == 8
    assert speed.decode_batch(torch.device("cpu"), 4, cpu_batch=8) == 4
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * gib, 80 * gib))
    assert speed.decode_batch(torch.device("cuda"), 64) == int(1.5 * gib) // speed.DECODE_BYTES_PER_OBJECT == 32
    assert speed.decode_batch(torch.device("cuda"), 16) == 16
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 20, 80 * gib))
    assert speed.decode_batch(torch.device("cuda"), 64) == 1


def test_stages_of_a_real_run_are_timed(sam, tmp_path) -> None:
    times = StageTimes()
    dataset = LabelMaps(COCO_STUFF / "imgs", COCO_STUFF / "pngs", tmp_path / "out")
    start = time.perf_counter()
    with recording(times):
        summary = run(
            dataset, Refiner(sam, RefinerConfig(iterations=1)), limit=2, progress=False, loader=load_in_background
        )
    wall = time.perf_counter() - start
    assert summary.images == 2 and summary.failures == 0
    assert set(times.seconds) == {"read", "wait for input", "encode", "mine", "decode", "upscale", "write"}
    assert times.calls["encode"] == times.calls["read"] == 2 and times.calls["mine"] == 2
    assert all(seconds > 0 for seconds in times.seconds.values())
    assert times.model_seconds() == sum(times.seconds[name] for name in MODEL_STAGES) < wall
    with stage("encode"):  # nothing is recorded outside `recording`
        pass
    assert times.calls["encode"] == 2


class SlowDataset:
    """Loads "img<k>" after a short sleep; "bad" fails; remembers how far loading ran ahead."""

    def __init__(self) -> None:
        self.loaded, self.consumed, self.ahead = 0, 0, 0

    def load(self, ref: SampleRef) -> Sample:
        time.sleep(0.002)
        if ref.key == "bad":
            raise ValueError("cannot decode")
        self.loaded += 1
        self.ahead = max(self.ahead, self.loaded - self.consumed)
        return Sample(ref, Path(ref.name), np.zeros((2, 2, 3), np.uint8), np.zeros((0, 2, 2), bool), [])

    def input_files(self, ref: SampleRef) -> list[Path]:
        return []  # nothing on disk to fingerprint


def refs(*keys: str) -> list[SampleRef]:
    return [SampleRef(key, f"{key}.png") for key in keys]


def test_background_loader_keeps_order_and_failures_and_stays_bounded() -> None:
    dataset, wanted = SlowDataset(), refs(*(f"img{index}" for index in range(12)), "bad", "img12")
    seen = []
    for ref, sample in load_in_background(dataset, wanted, depth=2):
        time.sleep(0.005)  # the model is slower than the loader
        dataset.consumed += 1
        seen.append((ref.key, type(sample).__name__))
    # a reading failure comes back as that image's InputError (see loader.load_one)
    assert seen == [(ref.key, "Sample") for ref in wanted[:12]] + [("bad", "InputError"), ("img12", "Sample")]
    in_order = [(ref.key, type(sample).__name__) for ref, sample in load_in_order(SlowDataset(), wanted)]
    assert seen == in_order
    assert dataset.ahead <= 2 + 2  # queue depth, the sample being loaded, the one being refined


def test_background_loader_stops_when_the_consumer_stops_and_raises_a_crash() -> None:
    threads = threading.active_count()
    loader = load_in_background(SlowDataset(), refs(*(f"img{index}" for index in range(50))), depth=1)
    next(loader)
    loader.close()
    assert threading.active_count() == threads

    class Crashing(SlowDataset):
        def load(self, ref: SampleRef) -> Sample:
            raise SystemExit("loader killed")  # not an Exception: not a per-sample failure

    with pytest.raises(SystemExit, match="loader killed"):
        list(load_in_background(Crashing(), refs("img0")))


def test_threaded_mining_gives_the_prompts_of_one_thread() -> None:
    from samrefiner.io.labelmaps import read_label_map
    from samrefiner.regions import split_then_merge

    label_map, _ = read_label_map(COCO_STUFF / "pngs" / "3.png")
    masks = np.stack([mask for _, mask in split_then_merge(label_map)])
    for strategy in ("distance", "random"):
        one = PromptMiner(masks.shape[1:], (683, 1024), point_strategy=strategy, rng=np.random.default_rng(3))
        several = PromptMiner(masks.shape[1:], (683, 1024), point_strategy=strategy, rng=np.random.default_rng(3))
        expected, got = one.mine(masks), mine_in_threads(several, masks, workers=3)
        for field in ("points", "labels", "boxes", "box_expanded", "mask_inputs"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


MEMORY_PROBE = """
import resource, sys
import numpy as np
from samrefiner import Refiner, RefinerConfig, load_model
height, width, count = (int(value) for value in sys.argv[1:4])
model, largest = load_model(sys.argv[4]), float(sys.argv[5])
model.encode(np.zeros((64, 64, 3), np.uint8))  # warm-up: allocator pools, lazy imports
rng = np.random.default_rng(0)
image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
masks = np.zeros((count, height, width), bool)
for index in range(count):  # boxes of 2 % to `largest` of each side, anywhere
    h, w = (int(side * rng.uniform(0.02, largest)) + 1 for side in (height, width))
    y, x = rng.integers(0, height - h), rng.integers(0, width - w)
    masks[index, y : y + h, x : x + w] = True
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
Refiner(model, RefinerConfig(iterations=1)).refine(image, masks)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize("height, width, count, largest", [(480, 640, 500, 0.4), (4000, 6000, 3, 0.95)])
def test_peak_memory_stays_bounded(height: int, width: int, count: int, largest: float) -> None:
    """Peak RSS growth of refining N objects on an H x W image (fresh process, reduced model) stays
    below 8 bytes per mask pixel (N x H x W) + 256 MiB: no N x H x W float arrays (three candidates
    at image size would be 12 bytes per mask pixel, 1.8 GB for 500 objects of 640 x 480)."""
    # one thread: the figure does not depend on it, and shared CPUs then slow the probe least
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    probe = subprocess.run(
        [
            sys.executable, "-c", MEMORY_PROBE,
            *map(str, (height, width, count, SAM_REF / "reduced_sam.pth", largest)),
        ],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    growth = int(probe.stdout.split()[-1])
    bound = 8 * count * height * width + (256 << 20)
    print(
        f"{count} objects on {width}x{height}: peak RSS growth {growth / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB)"
    )
    assert growth < bound


def test_decode_batches_reach_the_decoder_on_cuda_and_are_timed_synchronized(
    monkeypatch, reduced_model, capsys, tmp_path
) -> None:
    """bench/throughput.py --decode-batches on a GPU (CUDA faked faithfully, tests/cuda_fake.py): each
    objects-per-call value is the chunk size the decoder gets (CUDA's call size; the CPU batch is the
    CPU's), and the clock reads after the GPU's queued work (cuda:0 synchronized around each timing)."""
    import argparse
    import importlib.util

    from cuda_fake import FakeCuda, fake_load_model

    spec = importlib.util.spec_from_file_location("throughput", REPO / "bench" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "throughput", throughput)
    spec.loader.exec_module(throughput)
    cuda = FakeCuda(1).install(monkeypatch)
    monkeypatch.setattr(throughput, "load_model", fake_load_model(cuda, lambda spec, device: reduced_model))
    chunks: list[int] = []
    real_decode_batch = speed.decode_batch

    def recording(device, chunk_size, cpu_batch=speed.CPU_DECODE_BATCH):
        chunks.append(chunk_size)
        return real_decode_batch(device, chunk_size, cpu_batch)

    monkeypatch.setattr("samrefiner.models.transformers_backend.decode_batch", recording)
    args = argparse.Namespace(threads=torch.get_num_threads(), device="cuda", decode_batches=[1, 4])
    throughput.decode_batches(args, tmp_path)
    assert cuda.loaded_on == ["cuda"] and set(chunks) == {1, 4}
    assert chunks == sorted(chunks)  # every call of the first value, then of the second
    timed = [call for call in cuda.calls if call[1] == "synchronize"]
    assert [index for _, _, index in timed] == [0] * 4  # before and after each value's timed decode
    assert "  1 per call:" in capsys.readouterr().out
