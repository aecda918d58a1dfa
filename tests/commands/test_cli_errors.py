"""One error style: usage errors, option messages and checkpoint messages are one whole line
`samrefiner: error: <what>: <cause>` (exit 2), help shows plain flags, `--version` works."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from conftest import SAM_REF
from samrefiner import load_model
from samrefiner.cli import app, main
from samrefiner.errors import CheckpointError

BOX_CHARACTERS = set("╭╮╰╯│─")
COMMANDS = ["refine", "eval", "bench", "corrupt", "adapt", "review", "apply-review"]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def one_error_line(text: str) -> str:
    """The only line of `text`, checked to be in the CLI's error style."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("samrefiner: error: "), text
    assert "Traceback" not in text and not BOX_CHARACTERS & set(text), text
    return lines[0]


@pytest.mark.parametrize(
    "args, names",
    [
        (["refine", "--images", "i", "--out", "o", "--limit", "0"], "--limit 0"),
        (["refine", "--images", "i", "--out", "o", "--limit", "many"], "--limit many"),
        (["refine", "--images", "i"], "--out"),
        (["refine", "--images", "i", "--out", "o", "--resume", "true"], "true"),
        (["refine", "--images", "i", "--out", "o", "--bogus"], "--bogus"),
        (["bench", "--images", "i", "--gt", "g", "--limit", "0"], "--limit 0"),
        (["adapt", "--images", "i", "--out", "a.safetensors", "--rank", "0"], "--rank 0"),
        (["adapt", "--images", "i", "--out", "a.safetensors", "--lr", "-1"], "--lr -1"),
        (["eval", "--pred", "p"], "--gt"),
        (["corrupt", "--images", "i", "--gt", "g", "--out", "o", "--seed", "x"], "--seed x"),
        (
            ["review", "--images", "i", "--coarse", "c", "--refined", "r", "--out", "o", "--page-size", "0"],
            "--page-size 0",
        ),
        (["eval", "--gt", "g", "--pred", "p", "--format", "png"], "--format png"),
        (["apply-review"], "--decisions"),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_usage_errors_are_one_line(runner, args, names):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    line = one_error_line(result.stderr)
    assert names in line


def test_no_bool_placeholder_in_help(runner):
    for command in [[], *([name] for name in COMMANDS)]:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, command
    refine_help = runner.invoke(app, ["refine", "--help"]).output
    assert "--resume" in refine_help and "--no-use-box" in refine_help


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"samrefiner {version('samrefiner')}"


def run_main(capsys, args: list[str]) -> str:
    """`samrefiner ARGS` through the real entry point; its one error line."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return one_error_line(captured.err)


@pytest.mark.parametrize(
    "options, named, leaked",
    [
        (["--chunk-size", "0"], "--chunk-size", "chunk_size"),
        (["--no-use-points", "--no-use-box", "--no-use-mask"], "--use-points", "use_points"),
        (["--point-strategy", "nearest"], "--point-strategy", "point_strategy"),
    ],
)
def test_refinement_option_messages_use_option_names(capsys, one_image, tmp_path, options, named, leaked):
    images, masks = one_image
    args = [
        "refine",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(SAM_REF / "reduced_sam.pth"),
        *options,
    ]
    line = run_main(capsys, args)
    assert named in line and leaked not in line and "True" not in line
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_message_is_whole(capsys, tmp_path):
    truncated = tmp_path / "sam_vit_b.pth"
    truncated.write_bytes((SAM_REF / "reduced_sam.pth").read_bytes()[:300_000])
    with pytest.raises(CheckpointError) as error:
        load_model(truncated)
    message = str(error.value)
    assert message == (
        f"{truncated}: not a readable PyTorch checkpoint: the file is truncated or damaged "
        "(its zip archive ends early, at 300000 bytes); copy or download it again"
    )


def test_non_tensor_checkpoint_message_is_whole(tmp_path):
    garbage = tmp_path / "notes.pth"
    garbage.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as error:
        load_model(garbage)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{garbage}: not a readable PyTorch checkpoint: ")
    assert message.endswith("Unsupported operand 103)")  # the unpickler's own reason, not cut
    assert "In PyTorch 2.6" not in message  # not torch's paragraph about weights_only defaults


@pytest.mark.parametrize("errors", ["", "."])
def test_errors_option_naming_a_folder_is_one_line(capsys, one_image, tmp_path, errors):
    """`--errors ''` (or a folder) was an IsADirectoryError traceback at the end of the run."""
    images, masks = one_image
    args = [
        "refine",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(SAM_REF / "reduced_sam.pth"),
        "--errors",
        errors,
    ]
    line = run_main(capsys, args)
    assert "--errors" in line and "folder" in line
    assert not (tmp_path / "out").exists()
