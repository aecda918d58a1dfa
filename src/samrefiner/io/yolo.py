"""Ultralytics YOLO segmentation datasets (`samrefiner refine --yolo DIR`).

Layout: `DIR/data.yaml` names the split folders (`train`, `val`, `test`: a folder or a list of
folders, relative to DIR; `../x` falls back to `x` as Ultralytics does; `path` is not used for
reading). Every image under a split folder pairs with the label file at the same path with its
last `images` folder replaced by `labels` and the suffix `.txt`
(`images/train/a.jpg` -> `labels/train/a.txt`). Images without a label file are background
images: nothing to refine. Image lists (`train: train.txt`) are refused.

A label line is `class x1 y1 x2 y2 ...`: an integer class id (below `nc`, or the largest `names`
id + 1) and at least 3 polygon vertices normalised to 0-1; each line is one object, rasterised
at the image's size with COCO's polygon rule (`samrefiner.io.polygons.rasterize`). Blank lines are
skipped; any other line is refused with its file and line number. Object ids are line numbers.

Output under `--out`: the same relative paths, each label file with the same lines in the same
order, class ids kept, each polygon replaced by the refined mask's outline (several parts or
holes joined into one polygon as Ultralytics joins them, `samrefiner.io.polygons.join_parts`;
coordinates with 6 decimals). An object whose refined mask gives no polygon (empty or under a
pixel) keeps its input line. `data.yaml` is the input's with `path` set to the output folder;
images are not copied unless `--copy-images` (then every refined image and every background
image is copied; an image that failed is not, so that it is not taken for a background image).
`polygons.json` in the output reports how far the written polygons are from the refined masks:
`share_changed` = pixels that differ between each refined mask and its written polygon, summed
over objects, divided by the refined masks' total area.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from samrefiner.errors import InputError
from samrefiner.io.datasets import Dataset, OutputLayout, Sample, SampleRef, check_mask_sizes
from samrefiner.io.images import IMAGE_SUFFIXES, atomic_write, read_image
from samrefiner.io.polygons import DEFAULT_TOLERANCE, join_parts, outlines, rasterize

SPLITS = ("train", "val", "test")
REPORT_NAME = "polygons.json"


class YoloDataset(Dataset):
    """A YOLO segmentation dataset, refined into the same layout under `out`.

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
        tolerance: float = DEFAULT_TOLERANCE,
        ignore_exif: bool = False,
    ) -> None:
        self.root, self.images, self.ignore_exif = root, image_root or root, ignore_exif
        self.layout = OutputLayout.folder(out)
        self.copy_images, self.tolerance = copy_images, tolerance
        self.config = read_data_yaml(root / "data.yaml")
        self.names = class_names(self.config)
        declared = self.config.get("nc")
        self.class_count = declared if isinstance(declared, int) else (max(self.names) + 1 if self.names else None)
        self.report_line = ""
        self._labels: dict[str, tuple[Path, Path]] = {}  # key -> (image relative to images, label file)
        self._background: list[Path] = []
        for image in self._image_files():
            relative = image.relative_to(self.images)
            label = self.root / label_path(relative)
            if label.is_file():
                self._labels[relative.with_suffix("").as_posix()] = (relative, label)
            else:
                self._background.append(relative)

    def refs(self) -> list[SampleRef]:
        return [SampleRef(key, str(self.images / relative)) for key, (relative, _) in self._labels.items()]

    def input_files(self, ref: SampleRef) -> list[Path]:
        relative, label = self._labels[ref.key]
        return [self.images / relative, label]

    def load(self, ref: SampleRef) -> Sample:
        relative, label = self._labels[ref.key]
        image_path = self.images / relative
        image = read_image(image_path, ignore_exif=self.ignore_exif)
        height, width = image.shape[:2]
        lines = read_label_file(label, self.class_count)
        masks = [rasterize([polygon * (width, height)], height, width) for _, _, polygon, _ in lines]
        check_mask_sizes(image, image_path, masks, [str(label)] * len(masks))
        return Sample(
            ref,
            image_path,
            image,
            np.stack(masks) if masks else np.zeros((0, height, width), bool),
            [{"id": number, "category_id": class_id} for number, class_id, _, _ in lines],
            context=(relative, lines),
        )

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        """Write the label file; return this image's polygon figures for `polygons.json`."""
        relative, lines = sample.context
        height, width = sample.image.shape[:2]
        stats = {"objects": len(lines), "area": 0, "changed": 0, "kept_input": 0}
        written = []
        for (_, class_id, _, text), mask in zip(lines, result.masks):
            parts = outlines(mask, self.tolerance)
            if not parts:
                written.append(text)
                stats["kept_input"] += 1
                continue
            polygon = np.clip(join_parts(parts) / (width, height), 0.0, 1.0).round(6)
            stats["area"] += int(mask.sum())
            stats["changed"] += int((rasterize([polygon * (width, height)], height, width) != mask).sum())
            written.append(" ".join([str(class_id), *(f"{value:.6f}" for value in polygon.reshape(-1))]))
        text = "".join(line + "\n" for line in written)
        atomic_write(self.layout.out / label_path(relative), lambda handle: handle.write(text.encode("utf-8")))
        return {"polygons": stats, "image": relative.as_posix()}

    def finalize(self, outputs: Mapping[str, dict[str, Any]]) -> None:
        """Write data.yaml (path: the output), polygons.json and, with copy_images, the images."""
        out = self.layout.out
        document = yaml.safe_dump({**self.config, "path": str(out.resolve())}, sort_keys=False, allow_unicode=True)
        atomic_write(out / "data.yaml", lambda handle: handle.write(document.encode("utf-8")))
        totals = {"objects": 0, "area": 0, "changed": 0, "kept_input": 0}
        for output in outputs.values():
            for name in totals:
                totals[name] += output.get("polygons", {}).get(name, 0)
        share = totals["changed"] / totals["area"] if totals["area"] else 0.0
        report = json.dumps({**totals, "share_changed": share, "tolerance": self.tolerance}, indent=1) + "\n"
        atomic_write(out / REPORT_NAME, lambda handle: handle.write(report.encode("utf-8")))
        self.report_line = (
            f"polygons: {share:.2%} of the refined area changed by polygon writing "
            f"(tolerance {self.tolerance} px; {totals['kept_input']} objects kept their input line; see {out / REPORT_NAME})"
        )
        if self.copy_images:
            finished = [Path(output["image"]) for output in outputs.values() if "image" in output]
            for relative in [*finished, *self._background]:
                _copy(self.images / relative, out / relative)

    def _image_files(self) -> list[Path]:
        """Every image under the split folders of data.yaml, sorted, each once."""
        found: set[Path] = set()
        for folder in split_folders(self.config, self.root, self.images):
            found.update(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
        return sorted(found)


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The parsed data.yaml (a mapping); InputError naming it when missing or not YAML."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a YOLO dataset folder needs its data.yaml)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping with train/val/test and names")
    return config


def class_names(config: dict[str, Any]) -> dict[int, str]:
    """Class id -> name from `names` (a list or an id -> name mapping); {} when absent."""
    names = config.get("names")
    if isinstance(names, list):
        return dict(enumerate(str(name) for name in names))
    if isinstance(names, dict):
        return {int(key): str(value) for key, value in names.items()}
    return {}


def split_folders(config: dict[str, Any], root: Path, image_root: Path) -> list[Path]:
    """The image folders of the train/val/test entries, under `image_root` (InputError naming
    data.yaml when an entry is not a folder inside the dataset)."""
    source = root / "data.yaml"
    folders = []
    for split in SPLITS:
        entries = config.get(split)
        for entry in entries if isinstance(entries, list) else [entries]:
            if entry in (None, ""):
                continue
            relative = _relative_split(str(entry), root, image_root, source, split)
            folders.append(image_root / relative)
    if not folders:
        raise InputError(f"{source}: no train, val or test folder")
    return folders


def _relative_split(entry: str, root: Path, image_root: Path, source: Path, split: str) -> Path:
    """`entry` relative to the dataset folder, or `../entry` without its `../` (Ultralytics)."""
    candidates = [entry, entry[3:]] if entry.startswith("../") else [entry]
    inside = []
    for candidate in candidates:
        path = (root / candidate).resolve()
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


def read_label_file(path: Path, class_count: int | None) -> list[tuple[int, int, np.ndarray, str]]:
    """(line number, class id, normalised K x 2 vertices, the line) per non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error})") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            class_id, polygon = parse_label_line(line, class_count, f"{path}:{number}")
            lines.append((number, class_id, polygon, line.strip()))
    return lines


def parse_label_line(line: str, class_count: int | None, where: str) -> tuple[int, np.ndarray]:
    """Class id and K x 2 normalised vertices of one label line; InputError naming `where`."""
    tokens = line.split()
    try:
        class_id = int(tokens[0])
    except ValueError:
        raise InputError(f"{where}: class id {tokens[0]!r} is not an integer") from None
    if class_id < 0 or (class_count is not None and class_id >= class_count):
        raise InputError(f"{where}: class id {class_id} is outside the {class_count} classes of data.yaml")
    values = tokens[1:]
    if len(values) < 6 or len(values) % 2:
        raise InputError(f"{where}: expected a class id and at least 3 x y pairs, got {len(values)} numbers")
    try:
        coordinates = np.array([float(value) for value in values])
    except ValueError:
        raise InputError(f"{where}: polygon coordinates must be numbers") from None
    if not np.isfinite(coordinates).all() or coordinates.min() < 0 or coordinates.max() > 1:
        raise InputError(f"{where}: polygon coordinates must be normalised to 0-1")
    return class_id, coordinates.reshape(-1, 2)


def _copy(source: Path, target: Path) -> None:
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    with open(source, "rb") as handle:
        data = handle.read()
    atomic_write(target, lambda output: output.write(data))
