"""Ultralytics YOLO segmentation and detection datasets (`samrefiner refine --yolo DIR`).

Layouts: `DIR/data.yaml` as Ultralytics writes it (`train`, `val`, `test`: a folder or a list of
folders, relative to DIR; `../x` falls back to `x` as Ultralytics does; `path` is not used for
reading; `names` a list or an id -> name mapping; `nc`) or as supervision's
`DetectionDataset.as_yolo` writes it (`names` and `nc` only: the images are in `DIR/images/`).
Every image under those folders pairs with the label file at the same path with its last `images`
folder replaced by `labels` and the suffix `.txt` (`images/train/a.jpg` -> `labels/train/a.txt`).
Images without a label file are background images: nothing to refine. Image lists
(`train: train.txt`) are refused; so are two images that share one label file (`a.jpg`, `a.png`).

Label lines (`samrefiner.io.yolo_labels`): segments and boxes, read in Ultralytics' pixel-centre
convention (`samrefiner.io.yolo_polygons.fill`); a box is a box-shaped coarse mask, so a detection
dataset comes back as a segmentation dataset. A malformed line fails its image (`file:line: what`).
Object ids are line numbers.

Output under `--out`: the same relative paths, each label file with the same lines at the same
line numbers (blank lines kept), each object's class id as written, its polygon or box replaced by
the refined mask as one polygon (`samrefiner.io.yolo_polygons.mask_ring`: every part and hole
joined by the seams that paint the fewest pixels, far parts left out where the IoU is higher
without them; 6 decimals). An object whose refined mask is empty keeps its input line.
`data.yaml` is the input's with `path` set to the output folder; images are not copied unless
`--copy-images` (then every refined image and every background image is copied; an image
that failed is not, so that it is not taken for a background image). `polygons.json` in the
output reports how far what Ultralytics and supervision read back is from the refined masks:
`added` (pixels painted by seams), `lost` (pixels of far parts left out), and `share_changed` =
(added + lost) / refined area.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from samrefiner.errors import InputError
from samrefiner.io.datasets import (
    Dataset,
    OutputLayout,
    Sample,
    SampleContext,
    SampleRef,
    check_mask_sizes,
    context_of,
)
from samrefiner.io.images import atomic_write, read_image
from samrefiner.io.listing import IMAGE_SUFFIXES, list_files
from samrefiner.io.yolo_labels import LabelLine, read_label_file
from samrefiner.io.yolo_polygons import fill, mask_ring, ring_line

SPLITS = ("train", "val", "test")
REPORT_NAME = "polygons.json"
TOTALS = ("objects", "area", "added", "lost", "kept_input", "seconds")


@dataclass(frozen=True)
class YoloContext(SampleContext):
    """One image's path relative to the image folder and every line of its label file (blank ones
    included: the output keeps them in place)."""

    image: Path
    lines: tuple[LabelLine, ...]


class YoloDataset(Dataset):
    """A YOLO dataset, refined into the same layout under `out`.

    `image_root`: where the images are (default `root`): a refined dataset written without its
    images is read with the input's folder as `image_root`.
    """

    def __init__(
        self,
        root: Path,
        out: Path,
        *,
        image_root: Path | None = None,
        copy_images: bool = False,
        ignore_exif: bool = False,
    ) -> None:
        self.root, self.images, self.ignore_exif = root, image_root or root, ignore_exif
        self.layout = OutputLayout.folder(out)
        self.copy_images = copy_images
        self.config = read_data_yaml(root / "data.yaml")
        self.names = class_names(self.config, root / "data.yaml")
        self.class_count = class_count(self.config, self.names, root / "data.yaml")
        self.report_line = ""
        self._labels: dict[str, tuple[Path, Path]] = {}  # key -> (image relative to images, label file)
        self._background: list[Path] = []
        claimed: dict[Path, list[Path]] = defaultdict(list)
        for image in self._image_files():
            relative = image.relative_to(self.images)
            label = self.root / label_path(relative)
            if label.is_file():
                claimed[label].append(relative)
                self._labels[relative.with_suffix("").as_posix()] = (relative, label)
            else:
                self._background.append(relative)
        _check_one_image_per_label(claimed, self.images)

    def refs(self) -> list[SampleRef]:
        return [SampleRef(key, str(self.images / relative)) for key, (relative, _) in self._labels.items()]

    def input_files(self, ref: SampleRef) -> list[Path]:
        relative, label = self._labels[ref.key]
        return [self.images / relative, label]

    def load(self, ref: SampleRef) -> Sample:
        relative, label = self._labels[ref.key]
        image_path = self.images / relative
        lines = read_label_file(label, self.class_count)
        image = read_image(image_path, ignore_exif=self.ignore_exif)
        height, width = image.shape[:2]
        objects = [line for line in lines if line.is_object]
        masks = [line.mask(height, width) for line in objects]
        check_mask_sizes(image, image_path, masks, [str(label)] * len(masks))
        return Sample(
            ref,
            image_path,
            image,
            np.stack(masks) if masks else np.zeros((0, height, width), bool),
            [{"id": line.number, "category_id": line.class_id} for line in objects],
            context=YoloContext(relative, tuple(lines)),
        )

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        """Write the label file; return this image's polygon figures for `polygons.json`."""
        started = time.thread_time()
        context = context_of(sample, YoloContext)
        height, width = sample.image.shape[:2]
        stats: dict[str, Any] = dict.fromkeys(TOTALS, 0)
        masks = iter(result.masks)
        written = [
            _written_line(line, next(masks), height, width, stats) if line.is_object else "" for line in context.lines
        ]
        text = "".join(line + "\n" for line in written)
        target = self.layout.out / label_path(context.image)
        atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))
        stats["seconds"] = time.thread_time() - started  # CPU time of this thread (polygons.json)
        return {"polygons": stats, "image": context.image.as_posix()}

    def finalize(self, outputs: Mapping[str, dict[str, Any]]) -> None:
        """Write data.yaml (path: the output), polygons.json and, with copy_images, the images."""
        out = self.layout.out
        document = yaml.safe_dump({**self.config, "path": str(out.resolve())}, sort_keys=False, allow_unicode=True)
        atomic_write(out / "data.yaml", lambda handle: handle.write(document.encode("utf-8")))
        totals = dict.fromkeys(TOTALS, 0)
        for output in outputs.values():
            for name in TOTALS:
                totals[name] += output.get("polygons", {}).get(name, 0)
        share = (totals["added"] + totals["lost"]) / totals["area"] if totals["area"] else 0.0
        report = json.dumps({**totals, "share_changed": share}, indent=1) + "\n"
        atomic_write(out / REPORT_NAME, lambda handle: handle.write(report.encode("utf-8")))
        self.report_line = (
            f"polygons: {share:.2%} of the refined area changed by polygon writing "
            f"({totals['added']} pixels added by seams, {totals['lost']} lost with far parts left out; "
            f"{totals['kept_input']} objects kept their input line; see {out / REPORT_NAME})"
        )
        if self.copy_images:
            finished = [Path(output["image"]) for output in outputs.values() if "image" in output]
            for relative in [*finished, *self._background]:
                _copy(self.images / relative, out / relative)

    def _image_files(self) -> list[Path]:
        """Every image under the image folders of data.yaml, sorted, each once."""
        found: set[Path] = set()
        for folder in split_folders(self.config, self.root, self.images):
            if folder.is_dir():  # a split data.yaml names but the dataset lacks holds no image
                found.update(path for paths in list_files(folder, IMAGE_SUFFIXES, "images").values() for path in paths)
        return sorted(found)


def _written_line(line: LabelLine, mask: np.ndarray, height: int, width: int, stats: dict[str, Any]) -> str:
    """The output line of one object: its class token and the refined mask's ring (the input line
    when the mask is empty); adds the object's figures to `stats`."""
    stats["objects"] += 1
    ring = mask_ring(mask)
    if ring is None:
        stats["kept_input"] += 1
        return line.text
    coordinates = ring_line(ring, height, width)
    read_back = fill(np.array(coordinates.split(), np.float64).reshape(-1, 2), height, width)
    stats["area"] += int(mask.sum())
    stats["added"] += int((read_back & ~mask).sum())
    stats["lost"] += int((mask & ~read_back).sum())
    return f"{line.class_token} {coordinates}"


def _check_one_image_per_label(claimed: dict[Path, list[Path]], images: Path) -> None:
    """InputError naming the images when two of them would pair with one label file."""
    for label, owners in claimed.items():
        if len(owners) > 1:
            names = " and ".join(str(images / owner) for owner in owners)
            raise InputError(f"{label}: claimed by {names}; a label file belongs to one image (rename one)")


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The parsed data.yaml (a mapping); InputError naming it when missing or not YAML."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a YOLO dataset folder needs its data.yaml)") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(error).split())[:200]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping with names (and train/val/test folders, or images/ beside it)")
    return config


def class_names(config: dict[str, Any], source: Path) -> dict[int, str]:
    """Class id -> name from `names` (a list or an id -> name mapping); {} when absent; InputError
    naming `source` when the ids are not whole numbers."""
    names = config.get("names")
    if names is None:
        return {}
    if isinstance(names, list):
        return dict(enumerate(str(name) for name in names))
    if not isinstance(names, dict):
        raise InputError(f"{source}: names must be a list of class names or a mapping of class id to name")
    found = {}
    for key, value in names.items():
        class_id = key if isinstance(key, int) and not isinstance(key, bool) else None
        if isinstance(key, str) and key.strip().isdigit():
            class_id = int(key)
        if class_id is None or class_id < 0:
            raise InputError(f"{source}: names: {key!r} is not a class id (a whole number from 0, as in {{0: cat}})")
        found[class_id] = str(value)
    return found


def class_count(config: dict[str, Any], names: dict[int, str], source: Path) -> int | None:
    """The number of classes: `nc` (a positive whole number) or the largest `names` id + 1."""
    declared = config.get("nc")
    if declared is None:
        return max(names) + 1 if names else None
    if isinstance(declared, bool) or not isinstance(declared, (int, float)) or declared < 1 or declared % 1:
        raise InputError(f"{source}: nc: {declared!r} is not a number of classes (a whole number from 1)")
    if names and max(names) >= declared:
        raise InputError(f"{source}: nc: {declared!r} classes, but names has class id {max(names)}")
    return int(declared)


def split_folders(config: dict[str, Any], root: Path, image_root: Path) -> list[Path]:
    """The image folders of the train/val/test entries under `image_root`, or `images/` when
    there are none (supervision's layout); InputError naming data.yaml when an entry is not a
    folder inside the dataset."""
    source = root / "data.yaml"
    folders = []
    for split in SPLITS:
        entries = config.get(split)
        for entry in entries if isinstance(entries, list) else [entries]:
            if entry in (None, ""):
                continue
            if not isinstance(entry, str):
                raise InputError(f"{source}: {split}: {entry!r} is not a folder (give a folder or a list of folders)")
            relative = _relative_split(entry, root, image_root, source, split)
            folders.append(image_root / relative)
    if not folders and (image_root / "images").is_dir():
        folders.append(image_root / "images")
    if not folders:
        raise InputError(f"{source}: no train, val or test folder, and no images/ folder beside it")
    return folders


def _relative_split(entry: str, root: Path, image_root: Path, source: Path, split: str) -> Path:
    """`entry` relative to the dataset folder, or `../entry` without its `../` (Ultralytics)."""
    candidates = [entry, entry[3:]] if entry.startswith("../") else [entry]
    inside = []
    for candidate in candidates:
        try:
            path = (root / candidate).resolve()
        except (OSError, ValueError) as error:
            raise InputError(f"{source}: {split}: {entry!r} is not a usable folder name ({error})") from None
        if path.suffix.lower() == ".txt":
            raise InputError(f"{source}: {split}: {entry} is an image list; give image folders")
        if path == root.resolve() or root.resolve() in path.parents:
            inside.append(path.relative_to(root.resolve()))
    for relative in inside:
        if (image_root / relative).is_dir():
            return relative
    if not inside:
        raise InputError(f"{source}: {split}: {entry} lies outside the dataset folder {root}")
    raise InputError(f"{source}: {split}: no folder {entry} under {image_root}")


def label_path(image: Path) -> Path:
    """The label file of an image path (relative to the dataset): its last `images` folder
    becomes `labels`, its suffix `.txt`."""
    parts = list(image.parts)
    indices = [index for index, part in enumerate(parts[:-1]) if part == "images"]
    if not indices:
        raise InputError(f"{image}: a YOLO image must lie under an 'images' folder (labels go in 'labels')")
    parts[indices[-1]] = "labels"
    return Path(*parts).with_suffix(".txt")


def _copy(source: Path, target: Path) -> None:
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    with open(source, "rb") as handle:
        data = handle.read()
    atomic_write(target, lambda output: output.write(data))
