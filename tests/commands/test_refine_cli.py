"""`samrefiner refine` end to end with the small random model on ../shared/data (one iteration)."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import typing

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from test_io_coco import build_coco, decoded

import samrefiner.models
from conftest import DATA, SAM_REF
from io_fakes import tree_digest
from samrefiner.cli import main
from samrefiner.commands.options import CONFIG_HELP, config_fields
from samrefiner.io.images import read_mask

MODEL = str(SAM_REF / "reduced_sam.pth")
FAST = ["--model", MODEL, "--iterations", "1", "--no-progress"]
DAVIS = DATA / "davis2016"
STUFF = DATA / "coco_stuff"
# pycocotools 2.0 decoding under numpy 2 warns on every call; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def load_the_model_once():
    """Every command below loads the model through the real code path; the file is read once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(samrefiner.models, "load_model", functools.lru_cache(samrefiner.models.load_model))
        yield


@functools.lru_cache(maxsize=1)
def api_refiner():
    """The Python API's refiner with the options of FAST: what the CLI must have written."""
    from samrefiner import Refiner, RefinerConfig

    return Refiner(samrefiner.models.load_model(MODEL), RefinerConfig(iterations=1))


def run_cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run the `samrefiner` entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["samrefiner", *map(str, args)])
    with pytest.raises(SystemExit) as stopped:
        main()
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out, captured.err


def test_options_are_the_refiner_config_fields():
    from samrefiner.refine import RefinerConfig

    hints = typing.get_type_hints(RefinerConfig)
    expected = [(field.name, hints[field.name], field.default) for field in dataclasses.fields(RefinerConfig)]
    assert [(field.name, field.type, field.default) for field in config_fields()] == expected
    assert set(CONFIG_HELP) == {field.name for field in dataclasses.fields(RefinerConfig)}


def test_mask_folders_with_overlays(tmp_path, capsys, monkeypatch):
    before = tree_digest(DAVIS / "JPEGImages" / "blackswan", DAVIS / "Annotations" / "blackswan")
    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        DAVIS / "JPEGImages",
        "--masks",
        DAVIS / "Annotations",
        "--out",
        tmp_path / "out",
        "--limit",
        "1",
        "--save-overlays",
        tmp_path / "overlays",
    )
    assert code == 0 and out.startswith("1 images, 1 objects refined") and "0 failed" in out
    refined = Image.open(tmp_path / "out" / "blackswan" / "00000.png")
    assert refined.size == (854, 480) and set(np.unique(np.asarray(refined))) <= {0, 255}
    # the written mask is the model's refinement, which differs from the coarse input
    coarse = read_mask(DAVIS / "Annotations" / "blackswan" / "00000.png")
    expected = api_refiner().refine(DAVIS / "JPEGImages" / "blackswan" / "00000.jpg", coarse[None]).masks[0]
    np.testing.assert_array_equal(np.asarray(refined) > 0, expected)
    assert (expected != coarse).sum() > 100
    assert Image.open(tmp_path / "overlays" / "blackswan" / "00000.png").width > 2 * 854 // 2
    (line,) = (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["image"] == "blackswan/00000" and record["objects"][0]["id"] == "00000.png"
    assert 0.0 <= record["objects"][0]["predicted_iou"] <= 1.5
    assert tree_digest(DAVIS / "JPEGImages" / "blackswan", DAVIS / "Annotations" / "blackswan") == before

    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        DAVIS / "JPEGImages",
        "--masks",
        DAVIS / "Annotations",
        "--out",
        tmp_path / "out",
        "--limit",
        "1",
        "--resume",
    )
    assert code == 0 and out.startswith("0 images") and "1 already done" in out


def test_label_maps_keep_name_size_and_mode(tmp_path, capsys, monkeypatch):
    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        STUFF / "imgs",
        "--label-maps",
        STUFF / "pngs",
        "--out",
        tmp_path / "out",
        "--shard",
        "5/6",
    )
    assert code == 0 and out.startswith("1 images, 3 objects refined")
    original, refined = Image.open(STUFF / "pngs" / "5.png"), Image.open(tmp_path / "out" / "5.png")
    assert (refined.mode, refined.size) == (original.mode, original.size)
    assert set(np.unique(np.asarray(refined))) <= set(np.unique(np.asarray(original))) | {0}
    # the written map is the model's refinement; every class changed where the model changed it
    coarse = np.asarray(original)
    expected = api_refiner().refine_label_map(STUFF / "imgs" / "5.jpg", coarse)
    np.testing.assert_array_equal(np.asarray(refined), expected)
    for class_id in set(np.unique(coarse).tolist()) - {0, 255}:
        assert ((expected == class_id) != (coarse == class_id)).sum() > 100, class_id


def test_coco_json_in_and_out(tmp_path, capsys, monkeypatch):
    images, annotations, data = build_coco(tmp_path, stems=("5",))
    out = tmp_path / "out" / "refined.json"
    code, stdout, _ = run_cli(
        capsys, monkeypatch, "refine", *FAST, "--images", images, "--coco", annotations, "--out", out
    )
    assert code == 0 and "0 failed" in stdout
    refined = COCO(str(out))
    assert sorted(refined.getAnnIds()) == sorted(a["id"] for a in data["annotations"])
    height, width = data["images"][0]["height"], data["images"][0]["width"]
    objects = [annotation for annotation in data["annotations"] if not annotation["iscrowd"]]
    coarse = np.stack([decoded(annotation, height, width) for annotation in objects])
    expected = api_refiner().refine(images / data["images"][0]["file_name"], coarse).masks
    for annotation, mask in zip(objects, expected):  # per annotation id: the API's refinement
        np.testing.assert_array_equal(refined.annToMask(refined.anns[annotation["id"]]) > 0, mask)
    assert all(isinstance(a["segmentation"]["counts"], str) for a in refined.dataset["annotations"] if not a["iscrowd"])
    scores = json.loads((tmp_path / "out" / "refined.scores.jsonl").read_text())
    assert sorted(obj["id"] for obj in scores["objects"]) == sorted(
        a["id"] for a in data["annotations"] if not a["iscrowd"]
    )


def test_bad_images_and_masks_are_listed_and_the_exit_code_says_so(tmp_path, capsys, monkeypatch):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in ("corrupt", "wrong_size"):
        (masks / stem).mkdir(parents=True)
    images.mkdir()
    shutil.copy(STUFF / "imgs" / "5.jpg", images / "wrong_size.jpg")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    for stem, size in (("corrupt", (640, 480)), ("wrong_size", (320, 240))):
        mask = np.zeros(size[::-1], np.uint8)
        mask[100:200, 100:300] = 255
        Image.fromarray(mask).save(masks / stem / "object.png")
    before = tree_digest(images, masks)

    code, out, _ = run_cli(
        capsys, monkeypatch, "refine", *FAST, "--images", images, "--masks", masks, "--out", tmp_path / "out"
    )

    assert code == 1 and out.startswith("0 images, 0 objects refined") and "2 failed" in out
    lines = (tmp_path / "out" / "errors.txt").read_text().splitlines()
    assert lines[0].startswith(f"{images / 'corrupt.jpg'}: not a readable image")
    assert (
        lines[1]
        == f"{masks / 'wrong_size' / 'object.png'}: mask is 320x240 but image {images / 'wrong_size.jpg'} is 640x480"
    )
    assert len(lines) == 2
    assert tree_digest(images, masks) == before


def test_a_malformed_json_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "images").mkdir()
    (tmp_path / "broken.json").write_text('{"images": [{"id": 1,}]}')
    code, out, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        tmp_path / "images",
        "--coco",
        tmp_path / "broken.json",
        "--out",
        tmp_path / "out.json",
    )
    assert code == 2 and out == ""
    assert (
        err == f"samrefiner: error: {tmp_path / 'broken.json'}: not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1 column 22)\n"
    )
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("out", ["{coco}", "{images}/refined.json"])
def test_the_output_may_not_be_or_lie_inside_the_input(tmp_path, capsys, monkeypatch, out):
    images, annotations, _ = build_coco(tmp_path, stems=("5",))
    before = tree_digest(tmp_path)
    target = out.format(coco=annotations, images=images)
    code, _, err = run_cli(
        capsys, monkeypatch, "refine", *FAST, "--images", images, "--coco", annotations, "--out", target
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"samrefiner: error: {target}: output would overlap the input")
    assert tree_digest(tmp_path) == before


def test_the_output_may_not_contain_the_input(tmp_path, capsys, monkeypatch):
    shutil.copytree(STUFF, tmp_path / "coco_stuff")
    before = tree_digest(tmp_path)
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        tmp_path / "coco_stuff" / "imgs",
        "--label-maps",
        tmp_path / "coco_stuff" / "pngs",
        "--out",
        tmp_path,
    )
    assert code == 2 and "output would overlap the input" in err and err.count("\n") == 1
    assert tree_digest(tmp_path) == before


def test_bad_refinement_options_are_one_line(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        STUFF / "imgs",
        "--label-maps",
        STUFF / "pngs",
        "--out",
        tmp_path / "out",
        "--point-strategy",
        "middle",
    )
    assert code == 2 and err == (
        "samrefiner: error: --point-strategy middle: 'middle' is not one of 'distance', 'box_center', 'random' "
        "(see 'samrefiner refine --help')\n"
    )


def test_an_empty_masks_folder_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "masks").mkdir()
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        STUFF / "imgs",
        "--masks",
        tmp_path / "masks",
        "--out",
        tmp_path / "out",
    )
    assert (code, err) == (2, f"samrefiner: error: {tmp_path / 'masks'}: no coarse masks to refine\n")
