"""The embedding cache (`adapt --cache`) is keyed by everything that changes an embedding: the model,
the precision it computes in and the kind of device."""

from __future__ import annotations

import copy

import numpy as np
import torch

from conftest import SAM_REF
from samrefiner import load_model
from samrefiner.embedding_cache import EmbeddingCache, model_key


def test_the_key_follows_precision_and_device_kind() -> None:
    model = load_model(str(SAM_REF / "reduced_sam.pth"))
    keys = {}
    for precision in ("fp32", "bf16", "fp16"):
        model.speed_up(precision)
        keys[precision] = model_key(model)
    assert len(set(keys.values())) == 3
    model.speed_up("fp32")
    assert model_key(model) == keys["fp32"]  # the same model, the same precision: the same entries
    on_gpu = [copy.copy(model) for _ in range(2)]
    on_gpu[0].device, on_gpu[1].device = torch.device("cuda", 0), torch.device("cuda", 1)
    assert model_key(on_gpu[0]) == model_key(on_gpu[1]) != keys["fp32"]


def test_an_fp32_embedding_is_not_reused_in_bf16(tmp_path, monkeypatch) -> None:
    model = load_model(str(SAM_REF / "reduced_sam.pth"))
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    encoded = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda pixels: encoded.append(model.autocast_dtype) or encode(pixels))
    model.speed_up("fp32")
    fp32 = EmbeddingCache(model, tmp_path).encode(image)
    EmbeddingCache(model, tmp_path).encode(image)  # read back
    model.speed_up("bf16")
    bf16 = EmbeddingCache(model, tmp_path).encode(image)
    assert encoded == [None, torch.bfloat16] and len(list(tmp_path.iterdir())) == 2
    assert not torch.equal(fp32.embeddings, bf16.embeddings)
