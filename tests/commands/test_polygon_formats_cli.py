"""`samrefiner refine --yolo` and `--coco-segmentation polygons` end to end with the reduced SAM
(one iteration); the written polygons are compared with the refined masks of the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO
from test_io_coco import build_coco
from test_io_yolo import build_yolo, iou, read_with_supervision, seam_lower_bound
from test_refine_cli import FAST, MODEL, load_the_model_once, run_cli  # noqa: F401  (the fixture)

from conftest import DATA
from io_fakes import IdentityRefiner
from samrefiner import Refiner, RefinerConfig, load_model
from samrefiner.io.coco import CocoDataset
from samrefiner.io.images import read_image
from samrefiner.io.yolo import YoloDataset
from samrefiner.run.runner import run

STUFF = DATA / "coco_stuff"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def refiner() -> Refiner:
    return Refiner(load_model(MODEL), RefinerConfig(iterations=1))


def test_yolo_dataset_refines_end_to_end(tmp_path, capsys, monkeypatch, refiner):
    source, out = tmp_path / "yolo", tmp_path / "refined"
    build_yolo(source, stems=("0",), davis=False)

    code, stdout, _ = run_cli(capsys, monkeypatch, "refine", *FAST, "--yolo", source, "--out", out)

    assert code == 0, stdout
    report = json.loads((out / "polygons.json").read_text())
    assert f"polygons: {report['share_changed']:.2%} of the refined area changed by polygon writing" in stdout
    assert yaml.safe_load((out / "data.yaml").read_text())["path"] == str(out.resolve())
    written = read_with_supervision(out, source)
    added = lost = 0
    dataset = YoloDataset(source, tmp_path / "unused")
    assert sorted(written) == sorted(ref.key.removeprefix("images/") for ref in dataset.refs())
    for ref in dataset.refs():
        sample = dataset.load(ref)
        expected = refiner.refine(sample.image, sample.masks).masks
        objects = written[ref.key.removeprefix("images/")]
        assert [class_id for class_id, _ in objects] == [meta["category_id"] for meta in sample.objects]
        assert len(objects) == len(expected)
        for (_, mask), refined in zip(objects, expected):
            added, lost = added + int((mask & ~refined).sum()), lost + int((refined & ~mask).sum())
            parts, bound = seam_lower_bound(refined)
            assert (mask ^ refined).sum() <= 1.25 * bound + parts  # seams (or far specks left out), near the least
    assert (report["added"], report["lost"]) == (added, lost)


def holes(mask: np.ndarray) -> bool:
    """OpenCV's two-level contours: a hole is a contour with a parent."""
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def small_coco(root: Path) -> tuple[Path, Path]:
    """A 40x24 crop of coco_stuff's image 0 (PNG: lossless) with three asymmetric objects without
    holes (the reduced SAM refines objects of an image this small into masks without holes, so
    refined masks are written as polygons), and a crowd annotation."""
    (root / "images").mkdir(parents=True)
    pixels = read_image(STUFF / "imgs" / "0.jpg")[:24, :40]
    Image.fromarray(pixels).save(root / "images" / "crop.png")
    shapes = [
        [[2, 2, 20, 2, 20, 7, 8, 7, 8, 19, 2, 19]],  # an L
        [[24, 2, 38, 17, 22, 22]],  # a triangle
        [[10, 12, 19, 10, 21, 21, 12, 22]],  # a quadrilateral
    ]
    annotations = [
        {"id": 100 + number, "image_id": 7, "category_id": 1, "segmentation": shape, "iscrowd": 0}
        for number, shape in enumerate(shapes)
    ]
    annotations.append({"id": 1, "image_id": 7, "category_id": 1, "segmentation": shapes[0], "iscrowd": 1})
    data = {
        "images": [{"id": 7, "file_name": "crop.png", "height": 24, "width": 40}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return root / "images", path


def test_coco_polygon_output_loads_with_pycocotools_and_matches_the_refined_masks(
    tmp_path, capsys, monkeypatch, refiner
):
    """Per annotation id, what pycocotools draws from the written polygons is the API's refined
    mask; at least one mask is written as polygons (none has holes), so an x/y swap fails here."""
    images, path = small_coco(tmp_path / "coco")
    out = tmp_path / "refined.json"

    code, stdout, _ = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        images,
        "--coco",
        path,
        "--out",
        out,
        "--coco-segmentation",
        "polygons",
    )

    assert code == 0, stdout
    coco = COCO(str(out))
    dataset = CocoDataset(images, path, tmp_path / "unused.json")
    (ref,) = dataset.refs()
    sample = dataset.load(ref)
    expected = refiner.refine(read_image(sample.image_path), sample.masks).masks
    kept_rle = 0
    for meta, refined in zip(sample.objects, expected):
        annotation = coco.anns[meta["id"]]
        assert iou(coco.annToMask(annotation) > 0, refined) >= 0.98, meta["id"]
        if isinstance(annotation["segmentation"], dict):
            kept_rle += 1
            assert holes(refined) or refined.sum() < 4
        else:
            assert not holes(refined)
    assert kept_rle < len(expected)  # polygons were written and checked
    source = json.loads(path.read_text())["annotations"]
    assert coco.anns[1] == next(a for a in source if a["id"] == 1)  # the crowd one, as it was
    assert f"polygons: {kept_rle} refined annotations kept as RLE" in stdout


def test_coco_segmentation_input_keeps_each_annotations_kind(tmp_path, capsys, monkeypatch):
    images, path, data = build_coco(tmp_path / "coco", stems=("0",))
    out = tmp_path / "refined.json"
    dataset = CocoDataset(images, path, out)
    dataset.segmentation_kind = "input"  # what `refine --coco` does by default
    run(dataset, IdentityRefiner(), progress=False)
    refined = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    kinds = {type(original["segmentation"]) for original in data["annotations"]}
    assert kinds == {list, dict}
    for original in data["annotations"]:
        if not original["iscrowd"]:
            assert type(refined[original["id"]]["segmentation"]) is type(original["segmentation"])
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        images,
        "--coco",
        path,
        "--out",
        out,
        "--coco-segmentation",
        "svg",
    )
    assert code == 2 and "--coco-segmentation svg: choose one of rle, polygons, input" in err


def test_coco_polygons_for_masks_without_holes_rle_for_the_others(tmp_path):
    images, path, data = build_coco(tmp_path / "coco")
    out = tmp_path / "refined.json"
    dataset = CocoDataset(images, path, out)
    dataset.segmentation_kind = "polygons"
    run(dataset, IdentityRefiner(), progress=False)
    coco, source = COCO(str(out)), COCO(str(path))
    kinds = []
    for original in data["annotations"]:
        if original["iscrowd"]:
            continue
        annotation, unchanged = coco.anns[original["id"]], source.annToMask(source.anns[original["id"]]) > 0
        assert iou(coco.annToMask(annotation) > 0, unchanged) >= 0.98
        kinds.append(isinstance(annotation["segmentation"], list))
        assert kinds[-1] == (not holes(unchanged))
    assert 0 < sum(kinds) < len(kinds)  # both kinds occur in coco_stuff
    assert (
        dataset.report_line
        == f"polygons: {kinds.count(False)} refined annotations kept as RLE (holes, or too small for a polygon)"
    )


def test_format_options_are_refused_for_other_formats(tmp_path, capsys, monkeypatch):
    images, path, _ = build_coco(tmp_path / "coco", stems=("0",))
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "refine",
        *FAST,
        "--images",
        images,
        "--coco",
        path,
        "--out",
        tmp_path / "o.json",
        "--copy-images",
    )
    assert code == 2 and "--copy-images is for --yolo datasets" in err
    source = tmp_path / "yolo"
    build_yolo(source, stems=("0",), davis=False)
    code, _, err = run_cli(
        capsys, monkeypatch, "refine", *FAST, "--yolo", source, "--out", tmp_path / "o", "--coco-segmentation", "rle"
    )
    assert code == 2 and "--coco-segmentation rle is for --coco datasets" in err
    code, _, err = run_cli(capsys, monkeypatch, "refine", *FAST, "--coco", path, "--out", tmp_path / "o.json")
    assert code == 2 and "--coco needs --images" in err
