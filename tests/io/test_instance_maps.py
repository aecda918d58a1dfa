"""Instance maps (`--instance-maps`): every id refined as one object, written back as the same map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_refine_cli import FAST, api_refiner, load_the_model_once, run_cli  # noqa: F401 (autouse fixture: the model is read once)

from conftest import DATA
from io_fakes import IdentityRefiner, fake_result, tree_digest
from samrefiner.errors import InputError
from samrefiner.io.formats import open_dataset
from samrefiner.io.instancemaps import InstanceMaps
from samrefiner.io.labelmaps import LabelMaps
from samrefiner.run.runner import run

STUFF = DATA / "coco_stuff"
DAVIS = DATA / "davis2016"
PALETTE = [value for index in range(256) for value in ((37 * index) % 256, (91 * index) % 256, 255 - index)]


def instance_map() -> np.ndarray:
    ids = np.zeros((48, 64), np.uint8)
    ids[4:20, 4:24] = 1
    ids[24:44, 30:60] = 2
    ids[30:40, 4:14] = 5
    ids[0:2, :] = 255  # void
    return ids


def save_palette_map(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids, mode="L").convert("P")
    image.putpalette(PALETTE)
    image.save(path)


def make_dataset(root: Path, ids: np.ndarray, save=save_palette_map) -> InstanceMaps:
    (root / "images" / "seq").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*ids.shape, 3), 90, np.uint8)).save(root / "images" / "seq" / "00000.jpg")
    save(root / "maps" / "seq" / "00000.png", ids)
    return open_dataset("instance-maps", root / "maps", root / "images", root / "out")


class ScoredRefiner:
    """Returns fixed masks with fixed scores (to test who wins an overlap)."""

    def __init__(self, masks: np.ndarray, scores: list[float]) -> None:
        self.masks, self.scores = masks, scores

    def refine(self, image: np.ndarray, masks: np.ndarray):
        result = fake_result(self.masks)
        result.scores = np.asarray(self.scores)
        return result


def test_each_id_is_one_object_and_the_map_comes_back_with_its_ids_palette_and_void(tmp_path):
    ids = instance_map()
    dataset = make_dataset(tmp_path, ids)
    assert isinstance(dataset, InstanceMaps)
    before = tree_digest(tmp_path / "maps")
    (ref,) = dataset.refs()
    sample = dataset.load(ref)
    assert [obj["id"] for obj in sample.objects] == [1, 2, 5]
    for mask, value in zip(sample.masks, (1, 2, 5)):
        np.testing.assert_array_equal(mask, ids == value)

    run(dataset, IdentityRefiner(), progress=False)

    written = Image.open(tmp_path / "out" / "seq" / "00000.png")
    assert written.mode == "P" and written.getpalette() == PALETTE
    np.testing.assert_array_equal(np.asarray(written), ids)
    record = json.loads((tmp_path / "out" / "scores.jsonl").read_text())
    assert [obj["id"] for obj in record["objects"]] == [1, 2, 5]
    assert tree_digest(tmp_path / "maps") == before


def test_overlaps_go_to_the_higher_predicted_iou_and_void_stays_void(tmp_path):
    dataset = make_dataset(tmp_path, instance_map())
    grown = np.zeros((3, 48, 64), bool)
    grown[0, 0:30, 0:40] = True  # id 1, score 0.9: wins over id 2 where they overlap
    grown[1, 10:48, 20:64] = True  # id 2, score 0.3
    grown[2, 25:48, 0:25] = True  # id 5, NaN (kept coarse): loses to id 2 and id 1

    run(dataset, ScoredRefiner(grown, [0.9, 0.3, float("nan")]), progress=False)

    written = np.asarray(Image.open(tmp_path / "out" / "seq" / "00000.png"))
    expected = np.zeros((48, 64), np.uint8)
    expected[grown[2]] = 5
    expected[grown[1]] = 2
    expected[grown[0]] = 1
    expected[0:2, :] = 255
    np.testing.assert_array_equal(written, expected)
    assert written[15, 30] == 1 and written[35, 22] == 2  # 1 over 2, 2 over 5 (NaN)


def test_a_sixteen_bit_grayscale_map_keeps_ids_above_255(tmp_path):
    ids = instance_map().astype(np.uint16)
    ids[ids == 5] = 300

    def save(path: Path, values: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(path)

    dataset = make_dataset(tmp_path, ids, save)
    run(dataset, IdentityRefiner(), progress=False)
    written = np.asarray(Image.open(tmp_path / "out" / "seq" / "00000.png"))
    assert written.dtype == np.uint16
    np.testing.assert_array_equal(written, ids)
    record = json.loads((tmp_path / "out" / "scores.jsonl").read_text())
    assert [obj["id"] for obj in record["objects"]] == [1, 2, 300]


@pytest.mark.parametrize("kind", [InstanceMaps, LabelMaps])
def test_a_binary_mask_given_as_a_map_is_an_input_error_not_zero_objects(tmp_path, kind):
    (tmp_path / "images").mkdir()
    (tmp_path / "maps").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "images" / "a.jpg")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:20] = 255
    Image.fromarray(mask).save(tmp_path / "maps" / "a.png")
    dataset = kind(tmp_path / "images", tmp_path / "maps", tmp_path / "out")
    with pytest.raises(
        InputError,
        match=r"a\.png: holds only 0 and 255 \(void\), no (class|object) id: a binary mask\? "
        r"read the folder as per-object masks",
    ):
        dataset.load(dataset.refs()[0])


def test_label_maps_given_per_object_masks_fail_loudly(tmp_path, capsys, monkeypatch):
    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        DAVIS / "JPEGImages",
        "--label-maps",
        DAVIS / "Annotations",
        "--out",
        tmp_path / "out",
        "--limit",
        "1",
    )
    assert code != 0 and "0 objects refined" in out and "1 failed" in out
    (line,) = (tmp_path / "out" / "errors.txt").read_text().splitlines()
    assert line.startswith(f"{DAVIS / 'Annotations' / 'blackswan' / '00000.png'}: holds only 0 and 255 (void)")


def test_refine_cli_on_an_instance_map_made_from_coco_stuff(tmp_path, capsys, monkeypatch):
    labels = np.asarray(Image.open(STUFF / "pngs" / "5.png"))
    classes = [value for value in np.unique(labels).tolist() if value not in (0, 255)]
    ids = np.where(labels == 255, 255, 0).astype(np.uint8)
    for number, class_id in enumerate(classes, start=1):
        ids[labels == class_id] = number
    save_palette_map(tmp_path / "maps" / "5.png", ids)

    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        STUFF / "imgs",
        "--instance-maps",
        tmp_path / "maps",
        "--out",
        tmp_path / "out",
    )

    assert code == 0 and out.startswith(f"1 images, {len(classes)} objects refined")
    written = Image.open(tmp_path / "out" / "5.png")
    assert (written.mode, written.size, written.getpalette()) == ("P", (labels.shape[1], labels.shape[0]), PALETTE)
    values = np.asarray(written)
    assert set(np.unique(values).tolist()) <= set(range(len(classes) + 1)) | {255}
    np.testing.assert_array_equal(values == 255, ids == 255)
    record = json.loads((tmp_path / "out" / "scores.jsonl").read_text())
    assert [obj["id"] for obj in record["objects"]] == list(range(1, len(classes) + 1))
    # per object: the API's refinement, less the void and what objects of higher predicted IoU took
    coarse = np.stack([ids == number for number in range(1, len(classes) + 1)])
    result = api_refiner().refine(STUFF / "imgs" / "5.jpg", coarse)
    assert [obj["predicted_iou"] for obj in record["objects"]] == pytest.approx(result.scores.tolist(), abs=1e-6)
    for number, (mask, score) in enumerate(zip(result.masks, result.scores), start=1):
        taken = np.zeros_like(mask)
        for other, other_score in zip(result.masks, result.scores):
            taken |= other if other_score > score else False
        assert not (values == number)[~mask].any(), number  # nothing outside its refined mask
        np.testing.assert_array_equal((values == number)[mask & ~taken & (ids != 255)], True)


def test_review_reads_an_instance_map_run_and_apply_review_writes_the_map(tmp_path):
    from io_fakes import BoxRefiner
    from samrefiner.review.datasets import open_pair

    ids = instance_map()
    ids[20:24, 30:40] = 2  # an L shape: its box (what BoxRefiner returns) is larger
    run(make_dataset(tmp_path, ids), BoxRefiner(), progress=False)
    refined = np.asarray(Image.open(tmp_path / "out" / "seq" / "00000.png"))
    assert (refined == 2).sum() > (ids == 2).sum()

    pair = open_pair(tmp_path / "images", tmp_path / "maps", tmp_path / "out", tmp_path / "final")  # format detected
    assert pair.kind == "instance-maps"
    (ref,) = pair.coarse.refs()
    coarse, refined_masks = pair.load(ref)
    for mask, value in zip(refined_masks, (1, 2, 5)):
        np.testing.assert_array_equal(mask, refined == value)

    pair.coarse.write(coarse, fake_result(coarse.masks))  # every object rejected: the coarse map again
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "final" / "seq" / "00000.png")), ids)
