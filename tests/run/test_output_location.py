"""An output location is the tool's alone: files samrefiner did not write are never replaced, two
outputs of one command never share a path, and an unwritable output is one line before any work
(the model is never loaded: `build_refiner` fails the test if called)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from test_io_coco import build_coco
from test_io_runner import make_dataset
from test_run_manifest import fake_build_refiner, run_cli

import samrefiner.commands.refine as refine_module
from conftest import DATA
from io_fakes import tree_digest
from samrefiner.cli import main

DAVIS = DATA / "davis2016"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(refine_module, "build_refiner", refuse)


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("samrefiner: error: "), err
    return err


def test_out_naming_a_folder_of_the_users_own_masks_is_refused(no_model, capsys, monkeypatch, tmp_path):
    images, masks = make_dataset(tmp_path, count=2)
    mine = tmp_path / "my_masks"
    shutil.copytree(masks, mine)  # the user's own masks, at the paths refine would write
    before = tree_digest(mine)
    code, _, err = run_cli(capsys, monkeypatch, "--images", images, "--masks", masks, "--out", mine, "--model", "m")
    assert code == 2
    assert f"--out {mine}: a folder that holds files samrefiner did not write" in one_line(err)
    assert "--overwrite" in err
    assert tree_digest(mine) == before


def test_overwrite_writes_into_a_foreign_folder_and_keeps_its_other_files(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(refine_module, "build_refiner", fake_build_refiner)
    images, masks = make_dataset(tmp_path, count=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(
        capsys, monkeypatch, "--images", images, "--masks", masks, "--out", out, "--model", "m", "--overwrite"
    )
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "img1" / "b.png").is_file()
    code, _, err = run_cli(
        capsys, monkeypatch, "--images", images, "--masks", masks, "--out", out, "--model", "m", "--resume"
    )
    assert code == 0, err  # now samrefiner's output: resumed without --overwrite


def test_out_json_over_an_unrelated_json_is_refused(no_model, capsys, monkeypatch, tmp_path):
    images, coco, _ = build_coco(tmp_path)
    precious = tmp_path / "precious.json"
    precious.write_text(json.dumps({"mine": [1, 2, 3]}))
    code, _, err = run_cli(capsys, monkeypatch, "--images", images, "--coco", coco, "--out", precious, "--model", "m")
    assert code == 2 and f"--out {precious}: a file samrefiner did not write" in one_line(err)
    assert json.loads(precious.read_text()) == {"mine": [1, 2, 3]}


def test_a_json_outputs_scores_file_beside_it_is_checked_too(no_model, capsys, monkeypatch, tmp_path):
    images, coco, _ = build_coco(tmp_path)
    (tmp_path / "refined.scores.jsonl").write_text("not samrefiner's\n")
    code, _, err = run_cli(
        capsys, monkeypatch, "--images", images, "--coco", coco, "--out", tmp_path / "refined.json", "--model", "m"
    )
    assert code == 2 and f"{tmp_path / 'refined.scores.jsonl'}: a file samrefiner did not write" in one_line(err)


def test_overlays_into_the_mask_output_are_refused_davis_layout(no_model, capsys, monkeypatch, tmp_path):
    out = tmp_path / "out"
    args = ["--images", DAVIS / "JPEGImages", "--masks", DAVIS / "Annotations", "--model", "m", "--limit", "1"]
    for overlays, problem in ((out, "are the same path"), (out / "overlays", "lies inside --out")):
        code, _, err = run_cli(capsys, monkeypatch, *args, "--out", out, "--save-overlays", overlays)
        assert code == 2 and problem in one_line(err) and "--save-overlays" in err
    assert not out.exists()


def test_errors_file_over_the_scores_file_is_refused(no_model, capsys, monkeypatch, tmp_path):
    images, coco, _ = build_coco(tmp_path)
    out = tmp_path / "refined.json"
    code, _, err = run_cli(
        capsys, monkeypatch, "--images", images, "--coco", coco, "--out", out, "--model", "m",
        "--errors", tmp_path / "refined.scores.jsonl",
    )  # fmt: skip
    assert code == 2 and "are the same path" in one_line(err)


@pytest.mark.parametrize("option", ["--out", "--errors", "--save-overlays"])
def test_an_output_under_a_regular_file_is_one_line_before_the_model(no_model, capsys, monkeypatch, tmp_path, option):
    images, masks = make_dataset(tmp_path, count=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    paths = {"--out": tmp_path / "out", "--errors": tmp_path / "errors.txt", "--save-overlays": tmp_path / "overlays"}
    paths[option] = blocker / "below"
    args = [item for name, path in paths.items() for item in (name, path)]
    code, _, err = run_cli(capsys, monkeypatch, "--images", images, "--masks", masks, "--model", "m", *args)
    assert code == 2 and f"{option} {blocker / 'below'}: cannot be created, {blocker} is a file" in one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line_before_the_model(no_model, capsys, monkeypatch, tmp_path):
    images, masks = make_dataset(tmp_path, count=1)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, monkeypatch, "--images", images, "--masks", masks, "--model", "m", "--out", out)
    finally:
        out.chmod(0o755)
    assert code == 2 and "permission denied" in one_line(err)


def run_main(capsys, monkeypatch, *args) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["samrefiner", *map(str, args)])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code or 0, capsys.readouterr().err


def test_eval_json_over_an_unrelated_file_is_refused(capsys, monkeypatch, tmp_path):
    precious = tmp_path / "precious.json"
    precious.write_text('{"mine": true}')
    gt = DATA / "grabcut" / "gt"
    code, err = run_main(capsys, monkeypatch, "eval", "--gt", gt, "--pred", gt, "--format", "masks", "--json", precious)
    assert code == 2 and f"--json {precious}: a file samrefiner did not write" in one_line(err)
    assert precious.read_text() == '{"mine": true}'


def test_corrupt_into_a_folder_of_other_files_is_refused(capsys, monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.png").write_bytes(b"mine")
    grabcut = DATA / "grabcut"
    code, err = run_main(
        capsys, monkeypatch, "corrupt", "--images", grabcut / "images", "--gt", grabcut / "gt", "--out", out
    )
    assert code == 2 and f"--out {out}: a folder that holds files samrefiner did not write" in one_line(err)
    assert [path.name for path in out.iterdir()] == ["mine.png"]


def test_adapt_over_a_file_that_is_no_adapter_is_refused_before_the_model(capsys, monkeypatch, tmp_path):
    images, masks = make_dataset(tmp_path, count=1)
    precious = tmp_path / "weights.safetensors"
    precious.write_bytes(b"someone else's weights")
    monkeypatch.setattr("samrefiner.models.load_model", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    code, err = run_main(
        capsys, monkeypatch, "adapt", "--images", images, "--masks", masks, "--out", precious, "--model", "m"
    )
    assert code == 2 and f"--out {precious}: a file samrefiner did not write" in one_line(err)
    assert precious.read_bytes() == b"someone else's weights"


def test_apply_review_into_a_folder_of_other_files_is_refused_and_rerun_into_its_own(capsys, monkeypatch, tmp_path):
    from io_fakes import BoxRefiner
    from samrefiner.io.masks import MaskFolders
    from samrefiner.run.runner import run

    images, masks = make_dataset(tmp_path, count=2)
    refined = tmp_path / "refined"
    run(MaskFolders(images, masks, refined), BoxRefiner(), progress=False)
    from test_review import read_manifest

    assert (
        run_main(
            capsys,
            monkeypatch,
            "review",
            "--images",
            images,
            "--coarse",
            masks,
            "--refined",
            refined,
            "--out",
            tmp_path / "report",
        )[0]
        == 0
    )
    report = read_manifest(tmp_path / "report")["reportId"]
    decisions = tmp_path / "decisions.json"
    decisions.write_text(
        json.dumps({"format": "samrefiner-review-decisions", "version": 1, "report": report, "decisions": []})
    )
    final = tmp_path / "final"
    shutil.copytree(masks, final)  # the user's own masks where the final dataset would go
    before = tree_digest(final)
    args = ["apply-review", "--decisions", decisions, "--images", images, "--coarse", masks, "--refined", refined]
    code, err = run_main(capsys, monkeypatch, *args, "--out", final)
    assert code == 2 and f"--out {final}: a folder that holds files samrefiner did not write" in one_line(err)
    assert tree_digest(final) == before
    for _ in range(2):  # a new folder, then the same folder again: samrefiner's own output
        code, err = run_main(capsys, monkeypatch, *args, "--out", tmp_path / "final2")
        assert code == 0, err


def test_a_runs_own_overlays_and_errors_file_are_written_again(capsys, monkeypatch, tmp_path):
    """Recognised by the run's journals: a rerun or --resume goes on; a foreign file among the
    overlays makes the folder foreign again."""
    monkeypatch.setattr(refine_module, "build_refiner", fake_build_refiner)
    images, masks = make_dataset(tmp_path, count=2)
    (images / "img1.png").write_bytes(b"broken")  # an errors file
    overlays, errors = tmp_path / "overlays", tmp_path / "failed.txt"
    args = ["--images", images, "--masks", masks, "--out", tmp_path / "out", "--model", "m",
            "--save-overlays", overlays, "--errors", errors]  # fmt: skip
    assert run_cli(capsys, monkeypatch, *args)[0] == 1 and errors.is_file() and (overlays / "img0.png").is_file()
    assert run_cli(capsys, monkeypatch, *args, "--resume")[0] == 1
    (overlays / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, monkeypatch, *args, "--resume")
    assert code == 2 and f"--save-overlays {overlays}: a folder that holds files samrefiner did not write" in one_line(
        err
    )


def test_eval_writes_its_own_json_again(capsys, monkeypatch, tmp_path):
    gt = DATA / "grabcut" / "gt"
    for _ in range(2):
        code, err = run_main(
            capsys,
            monkeypatch,
            "eval",
            "--gt",
            gt,
            "--pred",
            gt,
            "--format",
            "masks",
            "--json",
            tmp_path / "scores.json",
        )
        assert code == 0, err
    assert json.loads((tmp_path / "scores.json").read_text())["missing"] == []


@pytest.mark.parametrize("where", ["foreign", "under a file"])
def test_bench_json_over_a_foreign_file_or_under_a_file_is_one_line_before_the_model(
    where, capsys, monkeypatch, tmp_path
):
    import samrefiner.commands.bench as bench_module

    monkeypatch.setattr(bench_module, "build_refiner", lambda *a, **k: pytest.fail("the model was loaded"))
    precious = tmp_path / "precious.json"
    precious.write_text('{"mine": true}')
    target = precious if where == "foreign" else precious / "table.json"
    grabcut = DATA / "grabcut"
    args = ("bench", "--images", grabcut / "images", "--gt", grabcut / "gt", "--seed", "0", "--json", target)
    code, err = run_main(capsys, monkeypatch, *args)
    assert code == 2 and f"--json {target}: " in one_line(err)
    assert precious.read_text() == '{"mine": true}'


@pytest.mark.parametrize("option", ["--save-overlays", "--errors"])
def test_an_output_inside_an_input_names_the_option_that_put_it_there(option, no_model, capsys, monkeypatch, tmp_path):
    images, masks = make_dataset(tmp_path, count=2)
    inside = images / ("overlays" if option == "--save-overlays" else "errors.txt")
    args = ("--images", images, "--masks", masks, "--out", tmp_path / "out", option, inside, "--model", "m")
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 2 and one_line(err).rstrip().endswith(f"overlap the input {images}; choose another {option}")
