"""YOLO datasets: read, refine, write back; outputs read back with supervision's reader (Ultralytics'
pixel-centre convention), inputs written by supervision's writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
import yaml
from conftest import DATA
from io_fakes import IdentityRefiner, fake_result, tree_digest
from PIL import Image
from scipy import ndimage
from scipy.sparse.csgraph import minimum_spanning_tree

from samrefiner.errors import InputError
from samrefiner.io.labelmaps import read_label_map
from samrefiner.io.yolo import YoloDataset
from samrefiner.runner import run

STUFF = DATA / "coco_stuff"
DAVIS = DATA / "davis2016"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def build_yolo(root: Path, stems: tuple[str, ...] = ("0", "1"), davis: bool = True) -> dict[str, list[np.ndarray]]:
    """A YOLO dataset from coco_stuff: `val` holds the coco_stuff images, one line per class with
    its largest outer contour (OpenCV); `train` one DAVIS frame with its object. Returns, per
    label file, each line's whole class region (all parts, holes kept)."""
    regions: dict[str, list[np.ndarray]] = {}
    names = {}
    sources = [("val", stem, STUFF / "imgs" / f"{stem}.jpg", read_label_map(STUFF / "pngs" / f"{stem}.png")[0]) for stem in stems]
    frame = np.asarray(Image.open(DAVIS / "Annotations" / "blackswan" / "00000.png").convert("L"))
    if davis:
        sources.append(("train", "blackswan", DAVIS / "JPEGImages" / "blackswan" / "00000.jpg", np.where(frame > 127, 1, 0)))
    for split, stem, image, label_map in sources:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / "images" / split / image.name.replace("00000", stem))
        height, width = label_map.shape
        lines, masks = [], []
        for class_id in (int(c) for c in np.unique(label_map) if c not in (0, 255)):
            region = label_map == class_id
            contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            largest = max(contours, key=cv2.contourArea).reshape(-1, 2)
            if len(largest) < 3 or cv2.contourArea(largest) < 50:
                continue
            names[class_id] = f"class {class_id}"
            lines.append(" ".join([str(class_id), *(f"{v:.6f}" for v in (largest / (width, height)).reshape(-1))]))
            masks.append(region)
        (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        regions[f"{split}/{stem}"] = masks
    config = {"path": "/elsewhere", "train": "images/train" if davis else None, "val": "images/val"}
    config["names"] = {i: names.get(i, str(i)) for i in range(max(names) + 1)}
    (root / "data.yaml").write_text(yaml.safe_dump(config))
    return regions


def read_with_supervision(root: Path, image_root: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Per label file (`split/stem`), (class id, mask) per object as supervision reads the dataset
    (`DetectionDataset.from_yolo(force_masks=True)`: Ultralytics' pixel-centre rasterisation),
    one image folder (data.yaml's splits, or `images/`) at a time."""
    config = yaml.safe_load((root / "data.yaml").read_text())
    splits = [split for split in ("train", "val", "test") if config.get(split)]
    folders = [(split, image_root / config[split], root / "labels" / split) for split in splits]
    if not folders:
        folders = [("", image_root / "images", root / "labels")]
    found = {}
    for split, images, labels in folders:
        dataset = sv.DetectionDataset.from_yolo(str(images), str(labels), str(root / "data.yaml"), force_masks=True)
        for path, _, detections in dataset:
            if (labels / f"{Path(path).stem}.txt").is_file():
                objects = [(int(c), m) for c, m in zip(detections.class_id, detections.mask)] if len(detections) else []
                found[f"{split}/{Path(path).stem}".lstrip("/")] = objects
    return found


def fill_even_odd(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """The pixels whose centres (column + 0.5, row + 0.5) lie inside the closed polygon `points`
    ((x, y) in pixel-corner units: COCO's convention, for `RefineResult.to_polygons` in
    test_public_api) by the even-odd rule: a scanline fill, one row at a time."""
    mask = np.zeros((height, width), bool)
    start, end = points, np.roll(points, -1, axis=0)
    for row in range(height):
        centre = row + 0.5
        crossing = (start[:, 1] <= centre) != (end[:, 1] <= centre)
        x0, y0, x1, y1 = start[crossing, 0], start[crossing, 1], end[crossing, 0], end[crossing, 1]
        xs = np.sort(x0 + (centre - y0) * (x1 - x0) / (y1 - y0))
        for left, right in zip(xs[0::2], xs[1::2]):
            mask[row, max(int(np.ceil(left - 0.5)), 0) : max(int(np.ceil(right - 0.5)), 0)] = True
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


class RegionRefiner(IdentityRefiner):
    """Returns each object's whole class region (several parts, holes): what the coarse line missed."""

    def __init__(self, regions: dict[str, list[np.ndarray]]) -> None:
        super().__init__()
        self.pending = [masks for _, masks in sorted(regions.items())]

    def refine(self, image, masks):
        super().refine(image, masks)
        wanted = next(m for m in self.pending if m[0].shape == masks.shape[1:] and len(m) == len(masks) and (m[0] & masks[0]).any())
        return fake_result(np.stack(wanted))


def seam_lower_bound(mask: np.ndarray) -> tuple[int, float]:
    """(parts, the least background pixels that straight seams joining them must cross): the
    minimum spanning tree of the parts' chessboard gaps (a straight 8-connected seam across a gap
    of d pixels crosses at least d - 1 background pixels)."""
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    gaps = np.zeros((count, count))
    for index in range(count):
        distance = ndimage.distance_transform_cdt(labels != index + 1, metric="chessboard")
        for other in range(index + 1, count):
            gaps[index, other] = distance[labels == other + 1].min() - 1 + 1e-9
    return count, float(minimum_spanning_tree(gaps).sum())


def test_unchanged_masks_round_trip_through_supervisions_reader(tmp_path):
    """Our reader gives the masks supervision reads from the input, and supervision reads our
    output of them as the same masks, pixel for pixel: single polygons have no seam to cost."""
    source, out = tmp_path / "yolo", tmp_path / "out"
    build_yolo(source)
    before = tree_digest(source)
    dataset = YoloDataset(source, out)
    coarse = {ref.key: dataset.load(ref) for ref in dataset.refs()}

    summary = run(dataset, IdentityRefiner(), progress=False)

    assert (summary.images, summary.failures) == (3, 0)
    assert tree_digest(source) == before
    assert not (out / "images").exists()  # not copied by default
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert config["path"] == str(out.resolve()) and config["val"] == "images/val"
    expected, written = read_with_supervision(source, source), read_with_supervision(out, source)
    assert sorted(written) == sorted(expected) == ["train/blackswan", "val/0", "val/1"]
    for key, objects in written.items():
        sample = coarse[f"images/{key}"]
        assert [c for c, _ in objects] == [c for c, _ in expected[key]] == [m["category_id"] for m in sample.objects]
        assert len(objects) == len(sample.masks) > 0
        for (_, mask), (_, theirs), ours in zip(objects, expected[key], sample.masks):
            np.testing.assert_array_equal(ours, theirs)  # read as supervision reads it
            np.testing.assert_array_equal(mask, ours)  # written so that supervision reads it back
    report = json.loads((out / "polygons.json").read_text())
    assert report["objects"] == sum(len(o) for o in written.values())
    assert (report["added"], report["lost"], report["share_changed"]) == (0, 0, 0.0)


def test_several_parts_and_holes_are_one_line_each_costing_only_the_seams(tmp_path):
    source, out = tmp_path / "yolo", tmp_path / "out"
    regions = build_yolo(source)
    split_parts = [mask for masks in regions.values() for mask in masks if cv2.connectedComponents(mask.astype(np.uint8))[0] > 2]
    assert split_parts  # coco_stuff classes in several pieces

    run(YoloDataset(source, out, copy_images=True), RegionRefiner(regions), progress=False)

    written = read_with_supervision(out, out)  # the images were copied
    added = 0
    for key, objects in written.items():
        lines = (out / "labels" / f"{key}.txt").read_text().splitlines()
        assert len(lines) == len(objects) == len(regions[key]) and all(len(line.split()) % 2 for line in lines)
        for (_, mask), region in zip(objects, regions[key]):
            assert not (region & ~mask).any()  # every refined pixel is read back
            added += int((mask & ~region).sum())
            parts, bound = seam_lower_bound(region)
            assert (mask & ~region).sum() <= 1.25 * bound + parts  # near the least any seams can cost
    report = json.loads((out / "polygons.json").read_text())
    assert (report["added"], report["lost"]) == (added, 0) and report["share_changed"] < 0.01
    assert tree_digest(out / "images") .keys() == {str(out / "images" / k) for k in ("train/blackswan.jpg", "val/0.jpg", "val/1.jpg")}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.1 0.1 0.5 0.1", "expected a class id and at least 3 x y pairs, got 4 numbers"),
        ("0 0.1 0.1 0.5 0.1 0.5", "got 5 numbers"),
        ("a 0.1 0.1 0.5 0.1 0.5 0.5", "class id 'a' is not an integer"),
        ("9999 0.1 0.1 0.5 0.1 0.5 0.5", "class id 9999 is outside the 173 classes of data.yaml"),
        ("0 0.1 0.1 1.5 0.1 0.5 0.5", "must be normalised to 0-1"),
        ("0 0.1 0.1 x 0.1 0.5 0.5", "must be numbers"),
    ],
)
def test_a_malformed_line_is_refused_with_its_file_and_line_number(tmp_path, line, message):
    source = tmp_path / "yolo"
    build_yolo(source, stems=("0",))
    label = source / "labels" / "val" / "0.txt"
    label.write_text(label.read_text() + "\n" + line + "\n")  # a blank line, then the bad one
    number = len(label.read_text().splitlines())
    dataset = YoloDataset(source, tmp_path / "out")
    with pytest.raises(InputError) as raised:
        dataset.load(next(ref for ref in dataset.refs() if ref.key == "images/val/0"))
    assert str(raised.value).startswith(f"{label}:{number}: ") and message in str(raised.value)


def test_data_yaml_problems_are_one_line_naming_it(tmp_path):
    source = tmp_path / "yolo"
    build_yolo(source, stems=("0",))
    config = source / "data.yaml"
    cases = [
        ("train: [unclosed", "not valid YAML"),
        ("train: train.txt\n", "is an image list; give image folders"),
        ("val: images/missing\n", "no folder images/missing"),
        ("val: ../../elsewhere\n", "lies outside the dataset folder"),
        ("names: [a]\n", "no train, val or test folder"),
    ]
    for text, message in cases:
        config.write_text(text)
        with pytest.raises(InputError, match=message) as raised:
            YoloDataset(source, tmp_path / "out")
        assert str(raised.value).startswith(str(config)) and "\n" not in str(raised.value)
    config.unlink()
    with pytest.raises(InputError, match="data.yaml: not found"):
        YoloDataset(source, tmp_path / "out")


def test_roboflow_style_split_paths_fall_back_like_ultralytics(tmp_path):
    source = tmp_path / "yolo"
    build_yolo(source, stems=("0",))
    (source / "data.yaml").write_text("val: ../images/val\nnames: {}\n")
    assert [ref.key for ref in YoloDataset(source, tmp_path / "out").refs()] == ["images/val/0"]
