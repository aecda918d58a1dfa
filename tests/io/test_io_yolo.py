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
from PIL import Image
from scipy import ndimage
from scipy.sparse.csgraph import minimum_spanning_tree

from conftest import DATA
from io_fakes import BoxRefiner, IdentityRefiner, box_mask, fake_result, tree_digest
from samrefiner.errors import InputError
from samrefiner.io.labelmaps import read_label_map
from samrefiner.io.yolo import YoloDataset
from samrefiner.run.runner import run

STUFF = DATA / "coco_stuff"
DAVIS = DATA / "davis2016"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def build_yolo(root: Path, stems: tuple[str, ...] = ("0", "1"), davis: bool = True) -> dict[str, list[np.ndarray]]:
    """A YOLO dataset from coco_stuff: `val` holds the coco_stuff images, one line per class with
    its largest outer contour (OpenCV); `train` one DAVIS frame with its object. Returns, per
    label file, each line's whole class region (all parts, holes kept)."""
    regions: dict[str, list[np.ndarray]] = {}
    names = {}
    sources = [
        ("val", stem, STUFF / "imgs" / f"{stem}.jpg", read_label_map(STUFF / "pngs" / f"{stem}.png")[0])
        for stem in stems
    ]
    frame = np.asarray(Image.open(DAVIS / "Annotations" / "blackswan" / "00000.png").convert("L"))
    if davis:
        sources.append(
            ("train", "blackswan", DAVIS / "JPEGImages" / "blackswan" / "00000.jpg", np.where(frame > 127, 1, 0))
        )
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
        wanted = next(
            m
            for m in self.pending
            if m[0].shape == masks.shape[1:] and len(m) == len(masks) and (m[0] & masks[0]).any()
        )
        return fake_result(np.stack(wanted))


def part_gaps(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each 8-connected part's pixels, the upper-triangular matrix of the background pixels that
    a straight 8-connected line between two parts crosses at least: their chessboard distance - 1)."""
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    gaps = np.zeros((count, count))
    for index in range(count):
        distance = ndimage.distance_transform_cdt(labels != index + 1, metric="chessboard")
        for other in range(index + 1, count):
            gaps[index, other] = distance[labels == other + 1].min() - 1
    return np.bincount(labels.ravel())[1:], gaps


def seam_lower_bound(mask: np.ndarray, exact_up_to: int = 30) -> tuple[int, float]:
    """(parts, the least background pixels that straight seams joining them must cross): the
    minimum spanning tree of the parts' chessboard gaps (`part_gaps`); past `exact_up_to` parts
    (model noise) the cheap bound of one pixel per seam."""
    count = ndimage.label(mask, np.ones((3, 3)))[1]
    if count > exact_up_to:
        return count, float(count - 1)
    _, gaps = part_gaps(mask)
    return count, float(np.round(minimum_spanning_tree(gaps + 1e-9 * (gaps > 0)).sum()))


def best_polygon_iou(mask: np.ndarray) -> float:
    """At least the IoU with `mask` of what `cv2.fillPoly` paints for ANY one polygon (computed from
    the parts alone, not from a writer). fillPoly draws the polygon's edges as 8-connected lines, a
    closed chain, and fills between them: its pixels are 8-connected. Touching the parts K, they
    join K: across any split of K in two they cross the gap between the sides, at least the largest
    edge of K's minimum spanning tree of `part_gaps` in background pixels. So IoU <= the largest
    area(K) / (area(mask) + that edge) over the sets K of parts (at most 12 parts here)."""
    areas, gaps = part_gaps(mask)
    assert len(areas) <= 12, "too many parts to try every set"
    best = 0.0
    for chosen in range(1, 2 ** len(areas)):
        parts = [part for part in range(len(areas)) if chosen >> part & 1]
        tree = minimum_spanning_tree(np.triu(gaps[np.ix_(parts, parts)] + 1e-9, 1)).toarray()
        best = max(best, areas[parts].sum() / (mask.sum() + np.round(tree.max())))
    return float(best)


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
    split_parts = [
        mask for masks in regions.values() for mask in masks if cv2.connectedComponents(mask.astype(np.uint8))[0] > 2
    ]
    assert split_parts  # coco_stuff classes in several pieces

    run(YoloDataset(source, out, copy_images=True), RegionRefiner(regions), progress=False)

    written = read_with_supervision(out, out)  # the images were copied
    added = lost = 0
    for key, objects in written.items():
        lines = (out / "labels" / f"{key}.txt").read_text().splitlines()
        assert len(lines) == len(objects) == len(regions[key]) and all(len(line.split()) % 2 for line in lines)
        for (_, mask), region in zip(objects, regions[key]):
            added, lost = added + int((mask & ~region).sum()), lost + int((region & ~mask).sum())
            parts, bound = seam_lower_bound(region)
            # the seams, or far parts left out: at most the least seams joining every part (a pixel a part
            # of slack: seams end on outline vertices)
            assert (mask ^ region).sum() <= bound + parts
    report = json.loads((out / "polygons.json").read_text())
    assert (report["added"], report["lost"]) == (added, lost) and report["share_changed"] < 0.01
    assert tree_digest(out / "images").keys() == {
        str(out / "images" / k) for k in ("train/blackswan.jpg", "val/0.jpg", "val/1.jpg")
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.1 0.1 0.5", "got 3 numbers after the class id"),
        ("0 0.1 0.1 0.5 0.1 0.5", "got 5 numbers"),
        ("a 0.1 0.1 0.5 0.1 0.5 0.5", "class id 'a' is not a number"),
        ("19.5 0.1 0.1 0.5 0.1 0.5 0.5", "class id '19.5' is not a whole number"),
        ("9999 0.1 0.1 0.5 0.1 0.5 0.5", "class id 9999 is outside the 173 classes of data.yaml"),
        ("0 0.1 0.1 1.5 0.1 0.5 0.5", "must be normalised to 0-1"),
        ("0 0.1 0.1 x 0.1 0.5 0.5", "must be numbers"),
        ("0 0.5 0.5 -0.1 0.2", "must be normalised to 0-1"),  # a box's negative width
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
        ("val: 7\n", "val: 7 is not a folder"),
        ("val: images/val\nnames: {a: cat}\n", "names: 'a' is not a class id"),
        ("val: images/val\nnames: cat\n", "names must be a list of class names or a mapping"),
        ("val: images/val\nnc: two\n", "nc: 'two' is not a number of classes"),
        ("val: images/val\nnc: 1\nnames: [a, b]\n", "nc: 1 classes, but names has class id 1"),
        ("[a, b]\n", "expected a mapping"),
    ]
    for text, message in cases:
        config.write_text(text)
        with pytest.raises(InputError, match=message) as raised:
            YoloDataset(source, tmp_path / "out")
        assert str(raised.value).startswith(str(config)) and "\n" not in str(raised.value)
    shutil.move(source / "images", source / "pictures")
    config.write_text("names: [a]\n")
    with pytest.raises(InputError, match="no train, val or test folder, and no images/ folder beside it"):
        YoloDataset(source, tmp_path / "out")
    config.unlink()
    with pytest.raises(InputError, match="data.yaml: not found"):
        YoloDataset(source, tmp_path / "out")


def test_ultralytics_names_and_roboflow_style_split_paths(tmp_path):
    source = tmp_path / "yolo"
    build_yolo(source, stems=("0",))
    (source / "data.yaml").write_text(
        "path: ../datasets/x\nval: ../images/val\nnames: {0: person, 1: bicycle}\nnc: 200\n"
    )
    dataset = YoloDataset(source, tmp_path / "out")
    assert [ref.key for ref in dataset.refs()] == ["images/val/0"]
    assert dataset.names == {0: "person", 1: "bicycle"} and dataset.class_count == 200


def supervision_dataset(tmp_path: Path, with_masks: bool = True) -> tuple[Path, sv.DetectionDataset]:
    """coco_stuff images 0 and 1 with one detection per class (mask, or box only), written by
    supervision's `as_yolo` (images/, labels/, data.yaml with names and nc only)."""
    images, annotations = {}, {}
    for stem in ("0", "1"):
        label_map, _ = read_label_map(STUFF / "pngs" / f"{stem}.png")
        classes = [int(c) for c in np.unique(label_map) if c not in (0, 255)]
        masks = np.stack([label_map == c for c in classes])
        path = str(STUFF / "imgs" / f"{stem}.jpg")
        images[path] = path
        annotations[path] = sv.Detections(
            xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
            mask=masks if with_masks else None,
            class_id=np.array(classes),
        )
    dataset = sv.DetectionDataset([str(c) for c in range(183)], list(images), annotations)
    root = tmp_path / "sv"
    dataset.as_yolo(str(root / "images"), str(root / "labels"), str(root / "data.yaml"))
    return root, dataset


def test_supervisions_layout_and_lines_read_as_supervision_reads_them(tmp_path):
    root, written = supervision_dataset(tmp_path)
    assert set(yaml.safe_load((root / "data.yaml").read_text())) == {"names", "nc"}
    theirs = read_with_supervision(root, root)
    dataset = YoloDataset(root, tmp_path / "out")
    assert sorted(ref.key for ref in dataset.refs()) == ["images/0", "images/1"]
    for ref in dataset.refs():
        sample = dataset.load(ref)
        expected = theirs[ref.key.removeprefix("images/")]
        assert [meta["category_id"] for meta in sample.objects] == [c for c, _ in expected]
        for ours, (_, mask) in zip(sample.masks, expected):
            np.testing.assert_array_equal(ours, mask)
        # supervision writes one line per part; each of its parts was a part of the mask it wrote
        source = next(d for p, _, d in written if Path(p).stem == ref.key.removeprefix("images/"))
        for ours, class_id in zip(sample.masks, [meta["category_id"] for meta in sample.objects]):
            region = source.mask[list(source.class_id).index(class_id)]
            if ours.sum() >= 400:
                assert (ours & region).sum() / ours.sum() >= 0.99


def test_box_lines_become_refined_segments_and_float_class_ids_are_read(tmp_path):
    root, _ = supervision_dataset(tmp_path, with_masks=False)
    label = root / "labels" / "0.txt"
    lines = label.read_text().splitlines()
    assert all(len(line.split()) == 5 for line in lines)  # supervision wrote boxes
    label.write_text("\n".join([f"{float(lines[0].split()[0])} {' '.join(lines[0].split()[1:])}", *lines[1:]]) + "\n")
    theirs = read_with_supervision(root, root)["0"]
    dataset = YoloDataset(root, tmp_path / "out")
    sample = dataset.load(next(ref for ref in dataset.refs() if ref.key == "images/0"))
    for ours, (_, box) in zip(sample.masks, theirs, strict=True):
        np.testing.assert_array_equal(ours, box)

    run(dataset, BoxRefiner(), progress=False)  # any refiner: its masks come back as segments

    written = (tmp_path / "out" / "labels" / "0.txt").read_text().splitlines()
    assert [line.split()[0] for line in written] == [line.split()[0] for line in label.read_text().splitlines()]
    assert all(len(line.split()) >= 7 for line in written)
    read_back = read_with_supervision(tmp_path / "out", root)["0"]
    for (_, mask), coarse in zip(read_back, sample.masks, strict=True):
        np.testing.assert_array_equal(mask, box_mask(coarse))


def test_two_images_sharing_a_label_file_are_refused_naming_both(tmp_path):
    source = tmp_path / "yolo"
    build_yolo(source, stems=("0",), davis=False)
    Image.open(source / "images" / "val" / "0.jpg").save(source / "images" / "val" / "0.png")
    with pytest.raises(InputError) as raised:
        YoloDataset(source, tmp_path / "out")
    message = str(raised.value)
    assert (
        message.startswith(str(source / "labels" / "val" / "0.txt")) and "0.jpg and " in message and "0.png" in message
    )


def test_blank_lines_keep_every_object_on_its_line(tmp_path):
    source, out = tmp_path / "yolo", tmp_path / "out"
    build_yolo(source, stems=("0",), davis=False)
    label = source / "labels" / "val" / "0.txt"
    first, *others = label.read_text().splitlines()
    label.write_text("\n".join(["", first, "", "  ", *others]) + "\n")

    run(YoloDataset(source, out), IdentityRefiner(), progress=False)

    written = (out / "labels" / "val" / "0.txt").read_text().splitlines()
    assert [bool(line.strip()) for line in written] == [bool(line.strip()) for line in label.read_text().splitlines()]
    refined = YoloDataset(out, tmp_path / "unused", image_root=source)
    coarse = YoloDataset(source, tmp_path / "unused")
    ids = [meta["id"] for meta in coarse.load(coarse.refs()[0]).objects]
    assert ids == [meta["id"] for meta in refined.load(refined.refs()[0]).objects] == [2, *range(5, 5 + len(others))]
