"""Format conformance for COCO and PNG masks, read back by the ecosystem's own readers.

1. Unchanged masks round-trip to themselves per object: a run whose refiner gives every mask
   back writes files that pycocotools (COCO) and PIL (PNG) read as the input, per object.
2. Refined output read back by pycocotools / PIL equals `Refiner.refine` of the coarse masks
   (the reduced SAM, one iteration, through the CLI), per object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from test_io_coco import build_coco
from test_refine_cli import FAST, api_refiner, load_the_model_once, run_cli  # noqa: F401  (the fixture)

from io_fakes import IdentityRefiner
from samrefiner.io.coco import CocoDataset
from samrefiner.io.masks import MaskFolders
from samrefiner.io.rle import encode_mask
from samrefiner.run.runner import run

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SIZE = (20, 28)  # height, width


def pycocotools_masks(path: Path) -> dict:
    """Annotation id -> the mask pycocotools draws, for a COCO file."""
    coco = COCO(str(path))
    return {annotation_id: coco.annToMask(annotation) > 0 for annotation_id, annotation in coco.anns.items()}


@pytest.mark.parametrize("kind", ["rle", "polygons", "input"])
def test_coco_round_trips_per_annotation_id(tmp_path, kind):
    images, path, _ = build_coco(tmp_path / "coco")
    dataset = CocoDataset(images, path, tmp_path / "out.json")
    dataset.segmentation_kind = kind
    run(dataset, IdentityRefiner(), progress=False)
    before, after = pycocotools_masks(path), pycocotools_masks(tmp_path / "out.json")
    assert after.keys() == before.keys()
    for annotation_id, mask in before.items():
        np.testing.assert_array_equal(after[annotation_id], mask, err_msg=str(annotation_id))
    coco = COCO(str(tmp_path / "out.json"))
    for annotation in coco.dataset["annotations"]:  # area and bbox as pycocotools computes them
        if not annotation["iscrowd"]:
            rle = coco.annToRLE(annotation)
            assert annotation["area"] == mask_utils.area(rle)
            assert annotation["bbox"] == mask_utils.toBbox(rle).tolist()


def blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(SIZE, bool)
    top, left = rng.integers(0, 8, 2)
    mask[top : top + 9, left : left + 13] = True
    mask[top + 3 : top + 6, left + 4 : left + 7] = False  # a hole
    return mask


def mask_files(folder: Path) -> dict[str, Image.Image]:
    """One object file per mode and depth a mask is stored in."""
    masks = [blob(seed) for seed in range(7)]
    palette_image = Image.fromarray(masks[1].astype(np.uint8) * 3, "L").convert("P")
    palette_image.putpalette([value for index in range(256) for value in (index * 40 % 256, 90, 200)])
    files = {
        "gray255.png": Image.fromarray(masks[0].astype(np.uint8) * 255),
        "palette.png": palette_image,
        "bits.png": Image.fromarray(masks[2]),
        "colour.png": Image.fromarray(np.where(masks[3][..., None], [200, 30, 90], 0).astype(np.uint8)),
        "alpha.png": Image.fromarray(np.where(masks[4][..., None], [10, 200, 30, 255], [0, 0, 0, 0]).astype(np.uint8)),
        "deep.png": Image.fromarray(masks[5].astype(np.uint16) * 40000),
        "ones.png": Image.fromarray(masks[6].astype(np.uint8)),
    }
    folder.mkdir(parents=True)
    for name, image in files.items():
        image.save(folder / name)
    return files


def dataset_folders(root: Path) -> tuple[Path, Path]:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(root / "images" / "scene.png")
    mask_files(root / "masks" / "scene")
    return root / "images", root / "masks"


def test_png_masks_round_trip_per_object_as_pil_reads_them(tmp_path):
    images, masks = dataset_folders(tmp_path)
    run(MaskFolders(images, masks, tmp_path / "out"), IdentityRefiner(), progress=False)
    for source in sorted((masks / "scene").iterdir()):
        with Image.open(source) as before, Image.open(tmp_path / "out" / "scene" / source.name) as after:
            assert (after.mode, after.size, after.getpalette()) == (before.mode, before.size, before.getpalette())
            np.testing.assert_array_equal(np.asarray(after), np.asarray(before), err_msg=source.name)


def test_refined_png_masks_read_by_pil_are_the_apis_refinement(tmp_path, capsys, monkeypatch):
    images, masks = dataset_folders(tmp_path)
    code, stdout, _ = run_cli(
        capsys, monkeypatch, "refine", *FAST, "--images", images, "--masks", masks, "--out", tmp_path / "out"
    )
    assert code == 0, stdout
    sources = sorted((masks / "scene").iterdir())
    coarse = np.stack([background_free(source) for source in sources])
    expected = api_refiner().refine(images / "scene.png", coarse).masks
    for source, object_mask, mask in zip(sources, coarse, expected):
        with Image.open(source) as before, Image.open(tmp_path / "out" / "scene" / source.name) as after:
            written, original = np.asarray(after), np.asarray(before)
            background = original[~object_mask][0]  # the file's own background pixel
            refined = (written != background).any(axis=-1) if written.ndim == 3 else written != background
            np.testing.assert_array_equal(refined, mask, err_msg=source.name)


def background_free(path: Path) -> np.ndarray:
    """The object of a mask file as PIL reads it: every pixel that is not the background (black,
    or transparent in an image with alpha)."""
    with Image.open(path) as image:
        values = np.asarray(image)
        if image.mode == "RGBA":
            return values[..., 3] > 0
        return values.any(axis=-1) if values.ndim == 3 else values != 0


def test_refined_coco_results_list_read_by_pycocotools_is_the_apis_refinement(tmp_path, capsys, monkeypatch):
    """A results list (no ids: objects by position) through the CLI; pycocotools' loadRes reads it."""
    images, path, data = build_coco(tmp_path / "coco", stems=("0",))
    (entry,) = data["images"]
    (images / entry["file_name"]).rename(images / f"{entry['id']:012d}.jpg")
    gt = COCO(str(path))
    objects = [annotation for annotation in data["annotations"] if not annotation["iscrowd"]]
    coarse = np.stack([gt.annToMask(annotation) > 0 for annotation in objects])
    results = [
        {"image_id": entry["id"], "category_id": a["category_id"], "segmentation": encode_mask(mask), "score": 0.5}
        for a, mask in zip(objects, coarse)
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "refined.json"

    code, stdout, _ = run_cli(
        capsys, monkeypatch, "refine", *FAST, "--images", images, "--coco", tmp_path / "results.json", "--out", out
    )

    assert code == 0, stdout
    written = json.loads(out.read_text())
    assert [sorted(result) for result in written] == [sorted(result) for result in results]  # no bbox added
    loaded = gt.loadRes(str(out))
    expected = api_refiner().refine(images / f"{entry['id']:012d}.jpg", coarse).masks
    for number, mask in enumerate(expected, start=1):  # loadRes numbers results 1, 2, ... in file order
        result = loaded.anns[number]
        np.testing.assert_array_equal(loaded.annToMask(result) > 0, mask)
        assert result["area"] == mask_utils.area(result["segmentation"]) == mask.sum()  # the mask's area, not the box's
