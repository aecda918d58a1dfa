"""The public API: names visible to dir() and `mypy --strict` (with the documentation's examples and
Literal option values), py.typed shipped, RefineResult conveniences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from test_io_yolo import fill_even_odd

import samrefiner
from conftest import DATA, REPO
from docs_examples import examples, typed_module
from samrefiner.io.labelmaps import read_label_map
from samrefiner.prompts import Prompts
from samrefiner.refine import RefineResult

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
USAGE = Path(__file__).with_name("typed_usage.py")
MYPY_CONFIG = Path(__file__).with_name("typed_usage.ini")


def test_every_public_name_is_listed_by_dir_and_resolves():
    assert set(samrefiner.__all__) <= set(dir(samrefiner))
    for name in samrefiner.__all__:
        assert getattr(samrefiner, name) is not None
    assert set(samrefiner._EXPORTS) <= set(samrefiner.__all__)
    documented = {"Refiner", "RefineResult", "RefinerConfig", "load_model"}
    assert documented | {"InputError", "CheckpointError", "SamRefinerError"} <= set(samrefiner.__all__)
    assert issubclass(samrefiner.InputError, samrefiner.SamRefinerError)
    assert issubclass(samrefiner.CheckpointError, samrefiner.SamRefinerError)


def test_importing_the_package_and_its_cli_leaves_torch_unimported():
    """Why the public names are imported on first use: every `samrefiner` command imports the package."""
    code = "import sys, samrefiner, samrefiner.cli, samrefiner.types; print('torch' in sys.modules)"
    checked = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert checked.stdout.strip() == "False"


def test_py_typed_ships_with_the_package():
    assert (Path(samrefiner.__file__).parent / "py.typed").is_file()
    assert '"py.typed"' in (REPO / "pyproject.toml").read_text()


def mypy(*paths: Path) -> subprocess.CompletedProcess:
    """`mypy --strict` (typed_usage.ini: strict, third-party packages as Any) on `paths`."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(MYPY_CONFIG), *map(str, paths)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_mypy_strict_accepts_every_public_name_the_typed_usage_and_each_documented_example(tmp_path):
    names = [name for name in samrefiner.__all__ if name != "__version__"]
    public = tmp_path / "public_names.py"
    public.write_text(
        "import samrefiner\n"
        + f"from samrefiner import {', '.join(names)}\n\n"
        + f"imported: list[object] = [{', '.join(names)}]\n"
        + f"attributes: list[object] = [{', '.join('samrefiner.' + name for name in names)}]\n"
        + "version: str = samrefiner.__version__\n"
    )
    blocks = examples()
    assert len(blocks) >= 3  # the Python API, supervision and FiftyOne examples at least
    documented = tmp_path / "documented_examples.py"
    documented.write_text(typed_module(blocks))
    checked = mypy(public, USAGE, documented)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 3 source files" in checked.stdout


WRONG_USAGES = {
    "text: str = refiner.refine(image, masks)": (
        'Incompatible types in assignment (expression has type "RefineResult", variable has type "str")'
    ),
    "RefinerConfig(iterations='two')": (
        'Argument "iterations" to "RefinerConfig" has incompatible type "str"; expected "int"'
    ),
    "RefinerConfig(point_strategy='nope')": (
        'Argument "point_strategy" to "RefinerConfig" has incompatible type "Literal[\'nope\']"; '
        "expected \"Literal['distance', 'box_center', 'random']\""
    ),
    "RefinerConfig(point_strategy=strategy)": (
        'Argument "point_strategy" to "RefinerConfig" has incompatible type "str"'
    ),
    "AdaptConfig(prompt='boxes')": 'Argument "prompt" to "AdaptConfig" has incompatible type "Literal[\'boxes\']"',
    "backend.speed_up(precision='fp8')": (
        'Argument "precision" to "speed_up" of "PromptableModel" has incompatible type "Literal[\'fp8\']"'
    ),
}


def test_mypy_strict_flags_each_wrong_usage(tmp_path):
    wrong = tmp_path / "wrong_usage.py"
    lines = [
        "import numpy as np",
        "from samrefiner import AdaptConfig, Refiner, RefinerConfig",
        "from samrefiner.models.sam import SamBackend",
        "",
        "",
        "def wrong(",
        "    refiner: Refiner, backend: SamBackend, image: np.ndarray, masks: np.ndarray, strategy: str",
        ") -> None:",
        *(f"    {usage}" for usage in WRONG_USAGES),
    ]
    wrong.write_text("\n".join(lines) + "\n")
    flagged = mypy(wrong)
    assert flagged.returncode == 1, flagged.stdout + flagged.stderr
    reported = flagged.stdout.splitlines()
    for offset, (usage, message) in enumerate(WRONG_USAGES.items()):
        line = f"{wrong}:{9 + offset}: error: "
        assert any(text.startswith(line) and message in text for text in reported), (usage, flagged.stdout)
    assert f"Found {len(WRONG_USAGES)} errors in 1 file" in flagged.stdout


@pytest.fixture(scope="module")
def result() -> RefineResult:
    """A result whose masks are the classes of a coco_stuff label map (parts and holes included)."""
    label_map, _ = read_label_map(DATA / "coco_stuff" / "pngs" / "0.png")
    classes = [c for c in np.unique(label_map) if c != 255]
    masks = np.stack([label_map == c for c in classes])
    count = len(masks)
    prompts = Prompts(
        np.zeros((count, 2, 2), np.int64),
        np.zeros((count, 2), np.int64),
        np.arange(count * 4).reshape(count, 4),
        np.arange(count) % 2 == 0,
    )
    return RefineResult(
        masks,
        np.linspace(0.5, 0.9, count, dtype=np.float32),
        np.zeros((count, 3), np.float32),
        np.arange(count) % 3,
        prompts,
        np.zeros(count, bool),
        np.arange(count) == 1,
    )


def test_len_indexing_and_slicing_select_objects(result):
    count = len(result)
    assert count == len(result.masks) > 3
    for index in (0, 2, -1):
        one = result[index]
        assert len(one) == 1
        np.testing.assert_array_equal(one.masks[0], result.masks[index])
        assert one.scores[0] == result.scores[index] and one.chosen[0] == result.chosen[index]
        np.testing.assert_array_equal(one.prompts.boxes[0], result.prompts.boxes[index])
    part = result[1:3]
    np.testing.assert_array_equal(part.empty_output, [True, False])
    np.testing.assert_array_equal(part.prompts.box_expanded, [False, True])
    picked = result[[3, 0]]
    np.testing.assert_array_equal(picked.masks, result.masks[[3, 0]])
    flags = np.arange(count) % 2 == 1
    assert len(result[flags]) == flags.sum()
    with pytest.raises(IndexError):
        result[count]


def test_xyxy_rle_and_polygons_follow_the_masks(result):
    for mask, box, rle, outlines in zip(result.masks, result.xyxy, result.to_rle(), result.to_polygons()):
        rows, cols = np.nonzero(mask)
        assert box.tolist() == [cols.min(), rows.min(), cols.max(), rows.max()]
        assert isinstance(rle["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}) > 0, mask)
        # even-odd fill of every outline gives the mask back
        got = np.zeros(mask.shape, bool)
        for outline in outlines:
            got ^= fill_even_odd(outline, *mask.shape)
        assert (got & mask).sum() / (got | mask).sum() >= 0.98
    coarse = result.to_polygons(tolerance=3.0)
    assert sum(map(len, coarse[0])) < sum(map(len, result.to_polygons()[0]))
