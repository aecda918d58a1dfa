"""SAMRefiner++ IoU adaption on the reduced random SAM and real images from ../shared/data."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import DATA, SAM_REF
from samrefiner.adapt import AdaptConfig, collect_samples, predicted_scores, ranking_loss, train_adapter
from samrefiner.adapter import IoUAdapter, adapted
from samrefiner.embedding_cache import EmbeddingCache
from samrefiner.errors import CheckpointError, SamRefinerError
from samrefiner.io.images import read_image, read_mask
from samrefiner.io.labelmaps import read_label_map
from samrefiner.models import load_model
from samrefiner.models.base import Encoding
from samrefiner.prompts import positive_points, tight_boxes
from samrefiner.refine import Refiner, RefinerConfig

REDUCED = SAM_REF / "reduced_sam.pth"
DAVIS_FRAME = ("blackswan", "00000")
COCO_STUFF_MAP = "3"  # 16 classes
EPOCHS = 10  # the default 1 epoch is a handful of steps on this small set


def davis_coarse_variants() -> tuple[np.ndarray, np.ndarray]:
    """A DAVIS frame and flawed copies of its ground truth (grown, shrunk, shifted, cut, boxed)."""
    sequence, frame = DAVIS_FRAME
    image = read_image(DATA / "davis2016" / "JPEGImages" / sequence / f"{frame}.jpg")
    gt = read_mask(DATA / "davis2016" / "Annotations" / sequence / f"{frame}.png")
    x1, y1, x2, y2 = tight_boxes(gt[None])[0]
    boxed = np.zeros_like(gt)
    boxed[y1 : y2 + 1, x1 : x2 + 1] = True
    left_half, top_half = gt.copy(), gt.copy()
    left_half[:, (x1 + x2) // 2 :] = False
    top_half[(y1 + y2) // 2 :] = False
    variants = [
        *(ndi.binary_dilation(gt, iterations=n) for n in (4, 12, 30)),
        *(ndi.binary_erosion(gt, iterations=n) for n in (4, 12)),
        *(np.roll(gt, shift, axis=(0, 1)) for shift in ((15, -25), (-30, 10), (0, 60))),
        left_half,
        top_half,
        boxed,
        boxed & ~ndi.binary_dilation(gt, iterations=3),
    ]
    return image, np.stack(variants)


def coco_stuff_regions() -> tuple[np.ndarray, np.ndarray]:
    """A COCO image and one coarse mask per labelled class of its stuff/things map."""
    label_map, _ = read_label_map(DATA / "coco_stuff" / "pngs" / f"{COCO_STUFF_MAP}.png")
    classes = [value for value in np.unique(label_map) if value not in (0, 255)]
    image = read_image(DATA / "coco_stuff" / "imgs" / f"{COCO_STUFF_MAP}.jpg")
    return image, np.stack([label_map == value for value in classes])


@pytest.fixture(scope="module")
def model():
    return load_model(str(REDUCED))


@pytest.fixture(scope="module")
def training_images():
    return [davis_coarse_variants(), coco_stuff_regions()]


@pytest.fixture(scope="module")
def encodings(model, training_images):
    """Each training image encoded once (the slow part), by image identity."""
    return {id(image): model.encode(image) for image, _ in training_images}


@pytest.fixture(scope="module")
def samples(model, training_images, encodings):
    return collect_samples(model, training_images, encode=lambda image: encodings[id(image)])


@pytest.fixture(scope="module")
def trained(model, samples):
    return train_adapter(model, samples, AdaptConfig(epochs=EPOCHS), progress=False)


def test_ranking_loss_matches_hand_computed_values():
    scores = torch.tensor([[0.5, 0.6, 0.1], [0.5, 0.6, 0.1], [0.30, 0.31, 0.29]])
    targets = torch.tensor([1, 0, 2])
    # sample 0: the target leads both others by more than m -> 0
    # sample 1: 0.6 - 0.5 + 0.02 = 0.12 (and 0.1 - 0.5 + 0.02 < 0)
    # sample 2: (0.30 - 0.29 + 0.02) + (0.31 - 0.29 + 0.02) = 0.03 + 0.04
    expected = (0.0 + 0.12 + 0.07) / 3
    assert ranking_loss(scores, targets, margin=0.02).item() == pytest.approx(expected, abs=1e-6)


def test_samples_target_the_candidate_closest_to_the_coarse_mask(model, training_images, encodings, samples):
    image, masks = training_images[0]
    masks = masks[:4]  # the first objects are enough, and decoding is the slow part
    encoding = encodings[id(image)]
    decoded = model.decode(encoding, None, None, tight_boxes(masks), None)
    candidates = (model.upscale(decoded.low_res_logits, encoding) > 0).numpy()
    ious = np.array([[(c & m).sum() / (c | m).sum() for c in group] for group, m in zip(candidates, masks)])
    ranked = np.sort(ious, axis=1)
    kept = ranked[:, -1] > ranked[:, -2]  # a tie for the best candidate is left out
    assert samples.targets[: kept.sum()].tolist() == ious[kept].argmax(axis=1).tolist()
    assert len(samples) + samples.skipped == sum(len(item[1]) for item in training_images)
    # the recorded head inputs reproduce the model's own scores
    base = predicted_scores(model, samples, None)[: kept.sum()]
    assert torch.allclose(base, decoded.iou_scores[torch.from_numpy(kept)], atol=1e-5)


def test_training_lowers_loss_and_raises_top1_agreement(trained, samples):
    assert len(samples) >= 20 and samples.skipped == 0
    assert trained.steps == EPOCHS * -(-len(samples) // 5)
    assert trained.after.loss < 0.7 * trained.before.loss
    assert trained.after.agreement >= trained.before.agreement + 0.15


def test_adapter_changes_scores_but_never_the_candidate_masks(model, training_images, encodings, trained):
    image, masks = training_images[0]
    masks = masks[:2]
    encoding = encodings[id(image)]
    boxes = tight_boxes(masks)
    plain = model.decode(encoding, None, None, boxes, None)
    with trained.adapter.applied(model):
        adapted_output = model.decode(encoding, None, None, boxes, None)
    assert torch.equal(plain.low_res_logits, adapted_output.low_res_logits)
    assert (plain.iou_scores - adapted_output.iou_scores).abs().max() > 1e-3
    # the hook is gone after the block, and a fresh adapter (B = 0) changes nothing
    assert torch.equal(model.decode(encoding, None, None, boxes, None).iou_scores, plain.iou_scores)
    with adapted(IoUAdapter.create(model), model):
        assert torch.equal(model.decode(encoding, None, None, boxes, None).iou_scores, plain.iou_scores)


def test_save_load_round_trip_gives_identical_scores(model, samples, trained, tmp_path):
    path = tmp_path / "adapter.safetensors"
    trained.adapter.save(path)
    loaded = IoUAdapter.load(path)
    assert path.stat().st_size < 16_000
    assert (loaded.rank, loaded.alpha, loaded.layer) == (4, 4.0, "proj_out")
    assert (loaded.base_fingerprint, loaded.base_name) == (trained.adapter.base_fingerprint, str(REDUCED))
    assert torch.equal(predicted_scores(model, samples, loaded), predicted_scores(model, samples, trained.adapter))


def test_refiner_rescores_with_an_adapter_file(model, training_images, encodings, samples, trained, tmp_path):
    image, masks = training_images[0]
    path = tmp_path / "adapter.safetensors"
    trained.adapter.save(path)
    box_only = RefinerConfig(iterations=1, use_points=False, use_mask=False)
    plain = Refiner(model, box_only).refine_encoded(encodings[id(image)], masks[:2])
    adapted_result = Refiner(model, box_only, adapter=path).refine_encoded(encodings[id(image)], masks[:2])
    # box prompts are what the samples were recorded with: the first two rows are these objects
    assert np.allclose(plain.candidate_scores, predicted_scores(model, samples, None)[:2], atol=1e-5)
    assert np.allclose(
        adapted_result.candidate_scores, predicted_scores(model, samples, trained.adapter)[:2], atol=1e-5
    )
    assert adapted_result.chosen.tolist() == adapted_result.candidate_scores.argmax(axis=1).tolist()
    assert adapted_result.chosen.tolist() != plain.chosen.tolist()  # the adapter changes the choice here


def test_adapter_for_another_base_model_is_refused(model, trained):
    bias = model.iou_head.proj_out.bias
    with torch.no_grad():
        bias += 0.5
    try:
        with pytest.raises(CheckpointError, match="trained for base model .*reduced_sam.pth"):
            with trained.adapter.applied(model):
                pass
    finally:
        with torch.no_grad():
            bias -= 0.5
    with trained.adapter.applied(model):  # the original weights are accepted again
        pass


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable .safetensors"),
        (b"\x00" * 3 + b"not safetensors at all" * 4, "not a readable .safetensors"),
        ("truncated", "not a readable .safetensors"),
        ("untagged", "not a samrefiner IoU adapter"),
        ("future", "format version '99' is not supported"),
        ("missing", "file not found"),
    ],
)
def test_broken_adapter_files_give_one_clear_line(trained, tmp_path, content, message):
    path = tmp_path / "adapter.safetensors"
    if content == "truncated":
        trained.adapter.save(path)
        path.write_bytes(path.read_bytes()[:-10])
    elif content == "untagged":
        save_file({"lora_A": torch.zeros(4, 256), "lora_B": torch.zeros(4, 4)}, path)
    elif content == "future":
        save_file({"lora_A": torch.zeros(4, 256)}, path, {"format": "samrefiner-iou-adapter", "format_version": "99"})
    elif content != "missing":
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as caught:
        IoUAdapter.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_embedding_cache_reuses_and_repairs_entries(model, tmp_path, monkeypatch):
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    stored = Encoding(torch.randn(1, 256, 64, 64), (6, 8), (768, 1024), {"extra": torch.ones(2, 3)})
    calls = []
    monkeypatch.setattr(model, "encode", lambda array: calls.append(array) or stored)
    cache = EmbeddingCache(model, tmp_path)
    cache.encode(image)
    again = EmbeddingCache(model, tmp_path).encode(image)
    assert len(calls) == 1 and len(list(tmp_path.iterdir())) == 1
    assert torch.equal(again.embeddings, stored.embeddings) and torch.equal(
        again.features["extra"], stored.features["extra"]
    )
    assert (again.original_size, again.input_size) == ((6, 8), (768, 1024))
    entry = next(tmp_path.iterdir())
    entry.write_bytes(b"damaged")
    assert torch.equal(cache.encode(image).embeddings, stored.embeddings) and len(calls) == 2
    assert entry.stat().st_size > 1000  # rewritten
    cache.encode(image[::-1].copy())  # other pixels, other entry
    assert len(calls) == 3 and len(list(tmp_path.iterdir())) == 2


def test_point_prompts_record_the_scores_of_point_decodes(model, training_images, encodings):
    image, masks = training_images[0]
    masks, encoding = masks[:2], encodings[id(image)]
    point_decode = model.decode(encoding, positive_points(masks)[:, None, :], np.ones((2, 1), np.int64), None, None)
    point_samples = collect_samples(model, [(image, masks)], prompt="point", encode=lambda _: encoding)
    assert point_samples.skipped == 0
    assert torch.allclose(predicted_scores(model, point_samples, None), point_decode.iou_scores, atol=1e-5)


def test_unknown_prompt_type_is_refused(model, training_images):
    with pytest.raises(SamRefinerError, match="unknown prompt type 'scribble'"):
        collect_samples(model, training_images[:1], prompt="scribble", encode=None)


def test_cli_training_options_default_to_adapt_config():
    from samrefiner.commands.adapt import adapt_command, parse_milestones

    parameters = inspect.signature(adapt_command).parameters
    for field in dataclasses.fields(AdaptConfig):
        default = parameters[field.name].default
        assert (parse_milestones(default) if field.name == "milestones" else default) == field.default, field.name
    assert parse_milestones("") == ()


def test_cli_adapt_writes_an_adapter_that_refine_uses(model, tmp_path, monkeypatch):
    from samrefiner.cli import app

    monkeypatch.setattr("samrefiner.models.load_model", lambda spec, device="cpu": model)  # loaded once, above

    out = tmp_path / "adapter.safetensors"
    data = [
        "--model",
        str(REDUCED),
        "--images",
        str(DATA / "coco_stuff" / "imgs"),
        "--label-maps",
        str(DATA / "coco_stuff" / "pngs"),
        "--limit",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    # 10 epochs: enough for the adapter to change the chosen candidate of some object below
    arguments = ["adapt", *data, "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "10"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "top-1 agreement with coarse-mask IoU" in result.output
    adapter = IoUAdapter.load(out)
    adapter.check_base(model)
    assert adapter.lora_b.abs().max() > 0
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1

    chosen = {}
    box_only = ["--iterations", "1", "--no-use-points", "--no-use-mask"]  # the prompt the adapter learned on
    for name, extra in (("plain", []), ("adapted", ["--adapter", str(out)])):
        refined = tmp_path / name
        result = CliRunner().invoke(app, ["refine", *data, "--out", str(refined), *extra, *box_only])
        assert result.exit_code == 0, result.output
        lines = (refined / "scores.jsonl").read_text().splitlines()
        records = [(entry["image"], item) for entry in map(json.loads, lines) for item in entry["objects"]]
        chosen[name] = {(image, item["id"]): (item["chosen"], item["predicted_iou"]) for image, item in records}
    plain, adapted_run = chosen["plain"], chosen["adapted"]
    assert plain.keys() == adapted_run.keys() and len(plain) > 1
    # the adapter rescored every object and changed which candidate some of them keep
    assert all(plain[key][1] != adapted_run[key][1] for key in plain)
    assert any(plain[key][0] != adapted_run[key][0] for key in plain)
