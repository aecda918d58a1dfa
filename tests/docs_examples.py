"""The Python examples of the user documentation (README.md and docs/*.md), for the tests that
type-check them (test_public_api.py) and run them (test_docs_examples.py). Not a test module.

An example is a ```python block. It may use what its prose gives the reader instead of defining
it: the names in `GIVEN` (an image, its masks and label map, a refiner) and a `photo.jpg` in the
working folder, which has `../shared` beside it (paths like `../shared/data/...` work as from the
repository root).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from samrefiner.models.base import PromptableModel

REPO = Path(__file__).resolve().parents[1]

# The names an example may take from its prose, with their types (what mypy checks them as).
GIVEN = {"image": "np.ndarray", "masks": "np.ndarray", "label_map": "np.ndarray", "refiner": "Refiner"}
FENCE = re.compile(r"^([ \t]*)```python[ \t]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)  # may be indented


@dataclass(frozen=True)
class Example:
    path: Path
    line: int  # of the opening fence
    code: str

    @property
    def name(self) -> str:
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{where}:{self.line}"

    @property
    def needs(self) -> set[str]:
        """The top-level packages the example imports."""
        names = set()
        for node in ast.walk(ast.parse(self.code)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        return {name.split(".")[0] for name in names}


def documentation_files(root: Path = REPO) -> list[Path]:
    """README.md and docs/**/*.md, and the Markdown files SAMREFINER_EXTRA_DOCS names (paths
    separated by os.pathsep: to check a page before it joins docs/)."""
    extra = [Path(path).resolve() for path in os.environ.get("SAMREFINER_EXTRA_DOCS", "").split(os.pathsep) if path]
    return [root / "README.md", *sorted((root / "docs").rglob("*.md")), *extra]


def examples(files: list[Path] | None = None) -> list[Example]:
    """Every ```python block of `files` (default: the README and docs/), in order."""
    found = []
    for path in files if files is not None else documentation_files():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            found.append(Example(path, text.count("\n", 0, match.start()) + 1, textwrap.dedent(match.group(2))))
    return found


def typed_module(blocks: list[Example]) -> str:
    """A module for mypy: each example the body of a function whose parameters are `GIVEN`."""
    parameters = ", ".join(f"{name}: {kind}" for name, kind in GIVEN.items())
    parts = ["import numpy as np", "from samrefiner import Refiner", ""]
    for index, example in enumerate(blocks):
        parts += ["", f"# {example.name}", f"def example_{index}({parameters}) -> None:"]
        parts.append(textwrap.indent(example.code, "    ") + "    pass")
    return "\n".join(parts) + "\n"


def given_names(model: PromptableModel, data: Path) -> dict[str, object]:
    """What the prose gives an example: coco_stuff's first image, its classes as masks, its label
    map, and a one-pass refiner on `model`."""
    from samrefiner import Refiner, RefinerConfig
    from samrefiner.io.images import read_image
    from samrefiner.io.labelmaps import read_label_map

    label_map, _ = read_label_map(data / "coco_stuff" / "pngs" / "0.png")
    masks = np.stack([label_map == value for value in np.unique(label_map) if value != 255])
    refiner = Refiner(model, RefinerConfig(iterations=1))
    return {
        "image": read_image(data / "coco_stuff" / "imgs" / "0.jpg"),
        "masks": masks,
        "label_map": label_map,
        "refiner": refiner,
    }


def offline_loader(model_path: Path) -> Callable[..., object]:
    """`load_model` for examples that name a model to download or a GPU: the model at
    `model_path` on the CPU for those, the real loader for a file the example names."""
    import torch

    from samrefiner.models import load_model

    def load(spec: str, device: str = "cpu") -> object:
        device = device if device == "cpu" or torch.cuda.is_available() else "cpu"
        return load_model(spec if Path(spec).exists() else model_path, device=device)

    return load


def run_example(example: Example, names: dict[str, object], shared: Path, workdir: Path) -> dict[str, object]:
    """Execute `example` in `workdir` (made here: `photo.jpg`, and `../shared` pointing to `shared`)
    with `names` given; its namespace afterwards."""
    workdir.mkdir()
    (workdir.parent / "shared").symlink_to(shared, target_is_directory=True)
    shutil.copy(shared / "data" / "coco_stuff" / "imgs" / "0.jpg", workdir / "photo.jpg")
    namespace = dict(names)
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        exec(compile(example.code, example.name, "exec"), namespace)
    finally:
        os.chdir(previous)
    return namespace
