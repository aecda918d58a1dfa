"""Run identity: every run writes a manifest; an output of another run is refused, resumed only with
equal settings, or replaced with --overwrite (exactly its files); shards and ranks agree on one."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_io_runner import make_dataset

import samrefiner
import samrefiner.commands.refine as refine_module
from conftest import SAM_REF
from io_fakes import BoxRefiner, tree_digest
from samrefiner.cli import main
from samrefiner.config import RefinerConfig
from samrefiner.errors import InputError
from samrefiner.io.datasets import OutputLayout
from samrefiner.run.manifest import check_same, new_manifest

MODEL = SAM_REF / "reduced_sam.pth"
# pycocotools 2.0 decoding under numpy 2 warns on every call; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class ModelRefiner(BoxRefiner):
    """A BoxRefiner that looks like a loaded Refiner to the manifest: weights that depend on the
    model's name, the refinement settings it was built with."""

    def __init__(self, model_spec: str, config: RefinerConfig) -> None:
        super().__init__()
        torch.manual_seed(zlib.crc32(model_spec.encode()))
        self.model = SimpleNamespace(model=torch.nn.Linear(3, 2), autocast_dtype=None)
        self.config = config


def fake_build_refiner(
    model_spec, device, config_values, adapter=None, precision="auto", compile_model=False, ranks=None
):
    return ModelRefiner(model_spec, RefinerConfig(**config_values))


@pytest.fixture
def fake_model(monkeypatch):
    monkeypatch.setattr(refine_module, "build_refiner", fake_build_refiner)


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["samrefiner", "refine", "--no-progress", *map(str, args)])
    with pytest.raises(SystemExit) as stopped:
        main()
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out, captured.err


@pytest.fixture
def data(tmp_path):
    images, masks = make_dataset(tmp_path)
    return ["--images", images, "--masks", masks, "--out", tmp_path / "out"], tmp_path / "out"


def record_keys(work_dir: Path) -> list[str]:
    """The image keys of the records in a work folder (each record names its image)."""
    return sorted(json.loads(path.read_text())["key"] for path in (work_dir / "records").iterdir())


def scores_keys(out: Path) -> list[str]:
    return [json.loads(line)["image"] for line in (out / "scores.jsonl").read_text().splitlines()]


def test_a_run_writes_its_manifest(fake_model, capsys, monkeypatch, data, tmp_path):
    args, out = data
    code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--iterations", "2", "--limit", "3")
    assert code == 0, err
    manifest = json.loads((out / ".samrefiner" / "run.json").read_text())
    assert manifest["samrefiner"] == samrefiner.__version__
    assert manifest["model"] == "m1" and len(manifest["model_sha256"]) == 64
    assert (manifest["iterations"], manifest["limit"], manifest["shards"], manifest["precision"]) == (2, 3, 1, "fp32")
    assert manifest["use_box"] is True and manifest["gamma"] == 4.0 and manifest["point_strategy"] == "distance"
    assert manifest["images"] == str((tmp_path / "images").resolve()) and manifest["label_maps"] is None
    assert manifest["masks"] == str((tmp_path / "masks").resolve())
    assert manifest["adapter_sha256"] is None


@pytest.mark.parametrize(
    ("second", "named"),
    [
        (["--model", "m1", "--iterations", "3"], "iterations (2 -> 3)"),
        (["--model", "m2", "--iterations", "2"], "model_sha256 ("),
        (["--model", "m1", "--iterations", "2", "--no-use-box"], "use_box (true -> false)"),
        (["--model", "m1", "--iterations", "2", "--limit", "4"], "limit (null -> 4)"),
        (["--model", "m1", "--iterations", "2", "--shard", "0/2"], "shards (1 -> 2)"),
    ],
)
def test_resume_with_other_settings_is_one_line_naming_them_and_changes_nothing(
    fake_model, capsys, monkeypatch, data, second, named
):
    args, out = data
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--iterations", "2")[0] == 0
    before = tree_digest(out)
    code, _, err = run_cli(capsys, monkeypatch, *args, *second, "--resume")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"samrefiner: error: {out}: the run there has other settings")
    assert "--resume continues only the same run" in err
    assert named in err
    assert tree_digest(out) == before


def test_the_adapter_file_is_part_of_the_run(fake_model, capsys, monkeypatch, data, tmp_path):
    args, out = data
    adapter = tmp_path / "adapter.safetensors"
    adapter.write_bytes(b"first adapter")
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--adapter", adapter)[0] == 0
    manifest = json.loads((out / ".samrefiner" / "run.json").read_text())
    assert manifest["adapter_sha256"] == hashlib.sha256(b"first adapter").hexdigest()
    adapter.write_bytes(b"retrained adapter")
    code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--adapter", adapter, "--resume")
    assert code == 2 and "adapter_sha256 (" in err


def test_settings_that_differ_are_refused_before_the_model_loads(fake_model, capsys, monkeypatch, data):
    args, out = data
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--iterations", "2")[0] == 0

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(refine_module, "build_refiner", no_model)
    code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--iterations", "3", "--resume")
    assert code == 2 and "iterations (2 -> 3)" in err


def test_resume_with_equal_settings_goes_on(fake_model, capsys, monkeypatch, data):
    args, out = data
    assert (
        run_cli(capsys, monkeypatch, *args, "--model", "m1", "--limit", "6", "--max-consecutive-failures", "2")[0] == 0
    )
    code, stdout, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--limit", "6", "--resume")
    assert code == 0, err
    assert "6 already done" in stdout  # --max-consecutive-failures is no part of the run's identity


def test_a_second_run_with_another_limit_is_refused_not_merged(fake_model, capsys, monkeypatch, data):
    args, out = data
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--limit", "4")[0] == 0
    before = tree_digest(out)
    code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--limit", "2")
    assert code == 2 and err.count("\n") == 1
    assert "holds another run's results (limit (4 -> 2))" in err and "--overwrite" in err
    assert tree_digest(out) == before


def test_overwrite_removes_exactly_the_files_of_the_other_run(fake_model, capsys, monkeypatch, data, tmp_path):
    args, out = data
    monkeypatch.chdir(tmp_path)
    args = [*args[:-1], "out"]  # a relative --out
    (tmp_path / "images" / "img5.png").write_bytes(b"broken")  # an errors file for the first run
    overlays = tmp_path / "overlays"
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--save-overlays", overlays)[0] == 1
    assert sorted(path.name for path in overlays.iterdir()) == [f"img{index}.png" for index in range(5)]
    assert (out / "errors.txt").is_file() and (out / "img4" / "a.png").is_file()
    (out / "notes.txt").write_text("mine")  # not samrefiner's: stays
    (out / "img0" / "mine.txt").write_text("mine")
    (overlays / "keep.txt").write_text("mine")

    code, _, err = run_cli(
        capsys, monkeypatch, *args, "--model", "m1", "--iterations", "1", "--limit", "2", "--overwrite"
    )

    assert code == 0, err
    files = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    outputs = {name for name in files if not name.startswith(".samrefiner/")}
    assert outputs == {
        "notes.txt",
        "img0/mine.txt",
        "img0/a.png",
        "img0/b.png",
        "img1/a.png",
        "img1/b.png",
        "scores.jsonl",
    }
    assert not (out / "img4").exists()  # its folder emptied and removed
    assert scores_keys(out) == ["img0", "img1"]
    assert sorted(path.name for path in overlays.iterdir()) == ["keep.txt"]
    assert record_keys(out / ".samrefiner") == ["img0", "img1"]
    assert json.loads((out / ".samrefiner" / "run.json").read_text())["iterations"] == 1
    assert not (out / "errors.txt").exists() and not (out / ".samrefiner" / "failures.log").exists()


def test_a_rerun_with_equal_settings_is_the_same_run(fake_model, capsys, monkeypatch, data):
    args, out = data
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--limit", "2")[0] == 0
    code, stdout, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--limit", "2", "--overwrite")
    assert code == 0, err
    assert stdout.startswith("2 images")  # shards of one run started with --overwrite keep each other's work
    assert scores_keys(out) == ["img0", "img1"]


def test_shards_of_one_run_share_the_output_and_a_shard_with_other_settings_is_refused(
    fake_model, capsys, monkeypatch, data
):
    args, out = data
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--shard", "0/2")[0] == 0
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1", "--shard", "1/2")[0] == 0
    assert scores_keys(out) == [f"img{index}" for index in range(6)]
    code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--shard", "1/2", "--iterations", "1")
    assert code == 2 and "iterations (5 -> 1)" in err


def test_an_output_made_before_manifests_is_refused_even_with_overwrite(fake_model, capsys, monkeypatch, data):
    args, out = data
    assert run_cli(capsys, monkeypatch, *args, "--model", "m1")[0] == 0
    (out / ".samrefiner" / "run.json").unlink()  # what an older samrefiner left
    before = tree_digest(out)
    for extra in ([], ["--resume"], ["--overwrite"]):
        code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", *extra)
        assert code == 2 and err.count("\n") == 1
        assert "without a run manifest" in err and "delete that output or choose another --out" in err
    assert tree_digest(out) == before


def test_resume_and_overwrite_together_are_refused(fake_model, capsys, monkeypatch, data):
    args, _ = data
    code, _, err = run_cli(capsys, monkeypatch, *args, "--model", "m1", "--resume", "--overwrite")
    assert code == 2 and "--resume" in err and "--overwrite" in err


def test_a_rank_whose_settings_differ_from_the_claimed_manifest_is_refused(tmp_path):
    from samrefiner.run.manifest import claim

    layout = OutputLayout.folder(tmp_path / "out")
    claim(layout, new_manifest(iterations=5, model_sha256="a" * 64), resume=False, overwrite=False)
    check_same(layout, new_manifest(iterations=5, model_sha256="a" * 64))
    with pytest.raises(InputError, match=r"model_sha256 \(aaaaaaaaaaaa -> bbbbbbbbbbbb\)"):
        check_same(layout, new_manifest(iterations=5, model_sha256="b" * 64))


def test_the_model_fingerprint_is_the_weights_not_the_path(capsys, monkeypatch, data, tmp_path):
    """End to end with the reduced SAM: the same weights under another name resume; other weights do not.
    (The one image is unreadable: a run that refines nothing still claims its output; no slow encoding.)"""
    args, out = data
    (tmp_path / "images" / "img0.png").write_bytes(b"broken")
    fast = ["--iterations", "1", "--limit", "1", "--device", "cpu"]
    copy = tmp_path / "copy_of_reduced_sam.pth"
    shutil.copyfile(MODEL, copy)
    assert run_cli(capsys, monkeypatch, *args, *fast, "--model", MODEL)[0] == 1
    code, stdout, err = run_cli(capsys, monkeypatch, *args, *fast, "--model", copy, "--resume")
    assert code == 1 and stdout.startswith("0 images, 0 objects refined") and "1 failed" in stdout, err
    state = torch.load(MODEL, weights_only=True)
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first] = state[first] + 1
    changed = tmp_path / "changed.pth"
    torch.save(state, changed)
    code, _, err = run_cli(capsys, monkeypatch, *args, *fast, "--model", changed, "--resume")
    assert code == 2 and "model_sha256 (" in err


def test_overwrite_of_a_coco_output_keeps_only_the_new_runs_annotations(tmp_path):
    """The runner API: the output json, its scores, errors and work folder are the new run's alone."""
    from test_io_coco import build_coco

    from samrefiner.io.coco import CocoDataset
    from samrefiner.run.runner import run

    images, path, data = build_coco(tmp_path)
    out = tmp_path / "refined.json"
    first = new_manifest(iterations=5, limit=None)
    run(CocoDataset(images, path, out), BoxRefiner(), progress=False, manifest=first)
    with pytest.raises(InputError, match=r"limit \(null -> 1\)"):
        run(
            CocoDataset(images, path, out),
            BoxRefiner(),
            progress=False,
            limit=1,
            manifest=new_manifest(iterations=5, limit=1),
        )

    run(
        CocoDataset(images, path, out),
        BoxRefiner(),
        progress=False,
        limit=1,
        manifest=new_manifest(iterations=5, limit=1),
        overwrite=True,
    )

    refined = json.loads(out.read_text())["annotations"]
    original = {annotation["id"]: annotation for annotation in data["annotations"]}
    second_image = [annotation for annotation in refined if annotation["image_id"] == 11]
    assert second_image == [original[annotation["id"]] for annotation in second_image]  # not refined: as given
    assert [json.loads(line)["image"] for line in (tmp_path / "refined.scores.jsonl").read_text().splitlines()] == [
        "10"
    ]
    assert record_keys(tmp_path / "refined.work") == ["10"]


def test_the_library_names_no_option_when_it_refuses_an_output(tmp_path):
    """`claim` says what is wrong; the CLI adds the options that resolve it (tested above)."""
    from samrefiner.run.manifest import RunConflict, claim

    layout = OutputLayout.folder(tmp_path / "out")
    claim(layout, new_manifest(iterations=5), resume=False, overwrite=False)
    for resume, kind in ((True, "resume"), (False, "overwrite")):
        with pytest.raises(RunConflict) as refused:
            claim(layout, new_manifest(iterations=4), resume=resume, overwrite=False)
        assert refused.value.kind == kind and "--" not in str(refused.value)
        assert "iterations (5 -> 4)" in str(refused.value)
