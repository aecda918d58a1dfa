"""The CLI layer: commands import the app and the shared options, never each other or the entry
point; the library says what is wrong and only the CLI names the option."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import samrefiner.commands
from samrefiner.cli import main
from samrefiner.errors import InputError
from samrefiner.io.images import write_png

COMMANDS = Path(samrefiner.commands.__file__).parent
SHARED = {"samrefiner.commands.app", "samrefiner.commands.options"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute imports, at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(COMMANDS.glob("*.py")), ids=lambda path: path.name)
def test_a_command_imports_no_other_command_and_not_the_entry_point(path):
    modules = imported_modules(path)
    assert "samrefiner.cli" not in modules
    if path.name == "__init__.py":  # the package registers every command
        return
    own = f"samrefiner.commands.{path.stem}"
    command_modules = {name for name in modules if name.startswith("samrefiner.commands.") and name.count(".") == 2}
    others = command_modules - SHARED - {own}
    assert not others, f"{path.name} imports {sorted(others)}"
    if path.name in ("app.py", "options.py"):
        assert not modules & {f"samrefiner.commands.{name}" for name in ("refine", "eval", "bench", "adapt")}


def run_cli(capsys, *args: str) -> str:
    """The one error line of a CLI run that must exit 2."""
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    assert stopped.value.code == 2
    return capsys.readouterr().err.strip()


def test_a_malformed_void_value_names_no_flag_in_the_library_and_the_option_in_the_cli(capsys, tmp_path):
    from samrefiner.evaluation.groundtruth import parse_void

    with pytest.raises(InputError) as raised:
        parse_void("grey")
    assert str(raised.value) == "void value grey: expected auto, none or a pixel value 0-65535"
    line = run_cli(capsys, "eval", "--gt", str(tmp_path), "--pred", str(tmp_path), "--void", "grey")
    assert line == "samrefiner: error: --void grey: expected auto, none or a pixel value 0-65535"


def test_a_void_value_on_a_colour_mask_names_the_option_in_the_cli_only(capsys, tmp_path):
    from samrefiner.evaluation.groundtruth import read_truth

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1:3, 1:3] = 255
    (gt / "img").mkdir(parents=True)
    Image.fromarray(rgb).save(gt / "img" / "0.png")
    write_png(pred / "img" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError) as raised:
        read_truth(gt / "img" / "0.png", 100)
    assert str(raised.value) == f"{gt / 'img' / '0.png'}: void value 100 needs a single-channel mask"
    line = run_cli(capsys, "eval", "--gt", str(gt), "--pred", str(pred), "--format", "masks", "--void", "100")
    assert line == f"samrefiner: error: {gt / 'img' / '0.png'}: --void 100 needs a single-channel mask"


def test_flat_masks_ask_for_the_layout_and_the_cli_names_the_option(capsys, tmp_path):
    from samrefiner.io.formats import detect_format

    write_png(tmp_path / "a.png", np.array([[0, 255]], np.uint8))
    reason = "its PNGs each hold one object value, so they may be binary masks or one-class label maps"
    with pytest.raises(InputError) as raised:
        detect_format(tmp_path)
    assert str(raised.value) == f"{tmp_path}: cannot tell masks from label maps ({reason})"
    line = run_cli(capsys, "eval", "--gt", str(tmp_path), "--pred", str(tmp_path))
    expected = f"{tmp_path}: cannot tell masks from label maps ({reason}): give --format masks or --format label-maps"
    assert line == f"samrefiner: error: {expected}"


def test_coco_refuses_a_void_value_naming_the_option_in_the_cli_only(capsys, tmp_path):
    from samrefiner.evaluation.evaluate import Format, evaluate

    gt = tmp_path / "gt.json"
    gt.write_text('{"images": [], "annotations": []}')
    with pytest.raises(InputError) as raised:
        evaluate(gt, gt, Format.coco, 0)
    assert str(raised.value) == "void value 0: COCO ground truth has no void value"
    line = run_cli(capsys, "eval", "--gt", str(gt), "--pred", str(gt), "--void", "0")
    assert line == "samrefiner: error: --void 0: COCO ground truth has no void value"


def test_bench_data_without_coarse_masks_or_seed_names_no_flag(capsys, tmp_path):
    from samrefiner.evaluation.bench import labelled_images

    with pytest.raises(InputError) as raised:
        labelled_images(tmp_path, tmp_path)
    assert "--" not in str(raised.value)
    line = run_cli(capsys, "bench", "--images", str(tmp_path), "--gt", str(tmp_path))
    assert line == "samrefiner: error: give either coarse masks (--coarse DIR) or a seed to make them (--seed S)"


def test_review_format_choices_are_the_format_registry():
    import typing

    from samrefiner.commands.review import ReviewFormat
    from samrefiner.io.formats import FORMATS

    assert typing.get_args(ReviewFormat) == ("auto", *FORMATS)
