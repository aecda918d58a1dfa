"""`samrefiner review` and `apply-review` on the three formats of `refine` (no browser, no model).

The refined datasets come from the batch runner with `BoxRefiner` (every mask becomes its
bounding box; predicted IoUs 0.5, 0.6, ... per image), so every expected mask is known.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_io_coco import build_coco, decoded
from test_review import read_chunk, read_manifest
from typer.testing import CliRunner

from conftest import DATA, SAM_REF
from io_fakes import BoxRefiner, box_mask, tree_digest
from samrefiner.cli import app
from samrefiner.errors import InputError
from samrefiner.evaluation.metrics import mask_iou
from samrefiner.io.coco import CocoDataset
from samrefiner.io.images import read_mask
from samrefiner.io.labelmaps import LabelMaps, read_label_map
from samrefiner.io.masks import MaskFolders
from samrefiner.regions import split_then_merge
from samrefiner.review.datasets import pair_format, split_like_regions
from samrefiner.run.runner import run

DAVIS = DATA / "davis2016"
STUFF = DATA / "coco_stuff"


@pytest.fixture(scope="module")
def cli() -> CliRunner:
    return CliRunner()


def invoke(cli: CliRunner, *args: object):
    result = cli.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result


def input_error(cli: CliRunner, *args: object) -> str:
    """The message of the InputError the command stops with (the CLI prints it as one line)."""
    result = cli.invoke(app, [str(arg) for arg in args])
    assert isinstance(result.exception, InputError), result.output
    return str(result.exception)


def write_decisions(path: Path, report: str | None, *entries: tuple[str, str, str]) -> Path:
    """A decisions file as the page exports it, from the report with id `report`."""
    decisions = [{"image": image, "object": key, "decision": decision} for image, key, decision in entries]
    document = {"format": "samrefiner-review-decisions", "version": 1, "report": report, "decisions": decisions}
    path.write_text(json.dumps({key: value for key, value in document.items() if value is not None}))
    return path


def review_id(cli: CliRunner, out: Path, images: Path, coarse: Path, refined: Path) -> str:
    """Run `samrefiner review` into `out`; the report id its page carries."""
    invoke(cli, "review", "--images", images, "--coarse", coarse, "--refined", refined, "--out", out)
    return read_manifest(out)["reportId"]


def all_entries(report: Path) -> list[dict]:
    manifest = read_manifest(report)
    pages = len(manifest["views"][0]["firsts"])
    return [entry for page in range(pages) for entry in read_chunk(report, 0, page)]


@pytest.fixture
def davis(tmp_path: Path) -> dict[str, Path]:
    """Two DAVIS sequences (3 frames each, masks DAVIS-style: one PNG per frame), refined."""
    root = tmp_path / "davis"
    for sequence in ("blackswan", "camel"):
        for frame in ("00000", "00010", "00020"):
            for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                (root / folder / sequence).mkdir(parents=True, exist_ok=True)
                shutil.copy(DAVIS / folder / sequence / f"{frame}{suffix}", root / folder / sequence)
    paths = {"images": root / "JPEGImages", "coarse": root / "Annotations", "refined": tmp_path / "refined"}
    run(MaskFolders(paths["images"], paths["coarse"], paths["refined"]), BoxRefiner(), limit=5, progress=False)
    return paths


def test_masks_review_scores_every_refined_object(cli, davis, tmp_path) -> None:
    result = invoke(
        cli,
        "review",
        "--images",
        davis["images"],
        "--coarse",
        davis["coarse"],
        "--refined",
        davis["refined"],
        "--out",
        tmp_path / "report",
    )
    assert "5 objects (masks)" in result.stdout and "1 images of the input have no refined version" in result.output
    entries = all_entries(tmp_path / "report")
    assert sorted(entry["image"] for entry in entries) == [
        "blackswan/00000",
        "blackswan/00010",
        "blackswan/00020",
        "camel/00000",
        "camel/00010",
    ]
    for entry in entries:
        coarse = read_mask(davis["coarse"] / f"{entry['image']}.png")
        assert entry["object"] == f"{entry['image'][-5:]}.png" and entry["class"] == ""
        assert entry["predicted"] == 0.5  # one object per image
        assert entry["change"] == pytest.approx(mask_iou(coarse, box_mask(coarse)), abs=1e-4)
    assert [entry["score"] for entry in entries] == sorted(entry["score"] for entry in entries)


def test_masks_apply_review_takes_refined_unless_rejected(cli, davis, tmp_path) -> None:
    report = review_id(cli, tmp_path / "report", davis["images"], davis["coarse"], davis["refined"])
    decisions = write_decisions(
        tmp_path / "decisions.json",
        report,
        ("blackswan/00000", "00000.png", "reject"),
        ("blackswan/00010", "00010.png", "accept"),
    )
    before = tree_digest(*davis.values(), decisions)
    for flag, undecided in (((), "refined"), (("--undecided-coarse",), "coarse")):
        out = tmp_path / f"final-{undecided}"
        result = invoke(
            cli,
            "apply-review",
            "--decisions",
            decisions,
            "--images",
            davis["images"],
            "--coarse",
            davis["coarse"],
            "--refined",
            davis["refined"],
            "--out",
            out,
            *flag,
        )
        assert "6 images written" in result.stdout and "2 decisions applied" in result.stdout
        expected = {
            "blackswan/00000": "coarse",
            "blackswan/00010": "refined",
            "blackswan/00020": undecided,
            "camel/00000": undecided,
            "camel/00010": undecided,
            "camel/00020": "coarse",  # not refined
        }
        for key, source in expected.items():
            final = read_mask(out / f"{key}.png")
            wanted = davis[source] / f"{key}.png"
            np.testing.assert_array_equal(final, read_mask(wanted), err_msg=f"{key} should be {source}")
    assert tree_digest(*davis.values(), decisions) == before


def test_apply_review_never_writes_into_its_inputs(cli, davis, tmp_path) -> None:
    decisions = write_decisions(tmp_path / "decisions.json", None)
    before = tree_digest(*davis.values())
    assert "would overlap the input" in input_error(
        cli,
        "apply-review",
        "--decisions",
        decisions,
        "--images",
        davis["images"],
        "--coarse",
        davis["coarse"],
        "--refined",
        davis["refined"],
        "--out",
        davis["coarse"],
    )
    assert "would overlap the input" in input_error(
        cli,
        "review",
        "--images",
        davis["images"],
        "--coarse",
        davis["coarse"],
        "--refined",
        davis["refined"],
        "--out",
        davis["refined"] / "report",
    )
    assert tree_digest(*davis.values()) == before


def test_label_maps_review_and_apply_per_region(cli, tmp_path) -> None:
    images, maps, refined = tmp_path / "imgs", tmp_path / "pngs", tmp_path / "refined"
    for folder, suffix in ((images, ".jpg"), (maps, ".png")):
        folder.mkdir()
        shutil.copy(STUFF / folder.name / f"0{suffix}", folder)
    run(LabelMaps(images, maps, refined), BoxRefiner(), progress=False)
    coarse_map, _ = read_label_map(maps / "0.png")
    refined_map, _ = read_label_map(refined / "0.png")
    regions = split_then_merge(coarse_map)
    assert pair_format(maps, refined) == "label-maps"

    report = review_id(cli, tmp_path / "report", images, maps, refined)
    entries = all_entries(tmp_path / "report")
    assert sorted(int(entry["object"]) for entry in entries) == list(range(len(regions)))
    assert {entry["class"] for entry in entries} == {f"class {class_id}" for class_id, _ in regions}
    manifest = read_manifest(tmp_path / "report")
    assert len(manifest["views"]) == 1 + len({class_id for class_id, _ in regions})

    accept_all = write_decisions(tmp_path / "none.json", report)
    invoke(
        cli,
        "apply-review",
        "--decisions",
        accept_all,
        "--images",
        images,
        "--coarse",
        maps,
        "--refined",
        refined,
        "--out",
        tmp_path / "accepted",
    )
    np.testing.assert_array_equal(read_label_map(tmp_path / "accepted" / "0.png")[0], refined_map)

    rejected = max(range(len(regions)), key=lambda index: regions[index][1].sum())
    class_id, region = regions[rejected]
    decisions = write_decisions(tmp_path / "reject.json", report, ("0", str(rejected), "reject"))
    invoke(
        cli,
        "apply-review",
        "--decisions",
        decisions,
        "--images",
        images,
        "--coarse",
        maps,
        "--refined",
        refined,
        "--out",
        tmp_path / "final",
    )
    final, _ = read_label_map(tmp_path / "final" / "0.png")
    shares = split_like_regions(refined_map, np.stack([mask for _, mask in regions]), [c for c, _ in regions])
    expected = np.zeros_like(coarse_map)
    for index, (region_class, _) in enumerate(regions):  # BoxRefiner's scores rise with the index
        expected[region if index == rejected else shares[index]] = region_class
    expected[coarse_map == 255] = 255
    np.testing.assert_array_equal(final, expected)
    assert (final != refined_map).sum() > 1000


def test_coco_review_names_classes_and_apply_keeps_rejected_coarse(cli, tmp_path) -> None:
    images, coarse, data = build_coco(tmp_path, stems=("0",))
    data["categories"] = [dict(category, name=f"thing{category['id']}") for category in data["categories"]]
    coarse.write_text(json.dumps(data))
    refined = tmp_path / "refined.json"
    run(CocoDataset(images, coarse, refined), BoxRefiner(), progress=False)
    assert pair_format(coarse, refined) == "coco"

    report = review_id(cli, tmp_path / "report", images, coarse, refined)
    entries = all_entries(tmp_path / "report")
    plain = [annotation for annotation in data["annotations"] if not annotation["iscrowd"]]
    assert sorted(entry["object"] for entry in entries) == sorted(str(a["id"]) for a in plain)
    names = {str(a["id"]): f"thing{a['category_id']}" for a in plain}
    assert all(entry["class"] == names[entry["object"]] and entry["name"] == "0.jpg" for entry in entries)

    rejected, accepted = plain[0], plain[1]
    decisions = write_decisions(
        tmp_path / "d.json", report, ("10", str(rejected["id"]), "reject"), ("10", str(accepted["id"]), "accept")
    )
    invoke(
        cli,
        "apply-review",
        "--decisions",
        decisions,
        "--images",
        images,
        "--coarse",
        coarse,
        "--refined",
        refined,
        "--out",
        tmp_path / "final.json",
        "--undecided-coarse",
    )
    final = {a["id"]: a for a in json.loads((tmp_path / "final.json").read_text())["annotations"]}
    height, width = data["images"][0]["height"], data["images"][0]["width"]
    coarse_mask = decoded(rejected, height, width)
    np.testing.assert_array_equal(decoded(final[rejected["id"]], height, width), coarse_mask)
    np.testing.assert_array_equal(
        decoded(final[accepted["id"]], height, width), box_mask(decoded(accepted, height, width))
    )
    assert final[plain[2]["id"]]["attributes"] == plain[2]["attributes"]


def test_coco_objects_are_matched_by_annotation_id_not_by_position(cli, tmp_path) -> None:
    """The refined file's annotations in another order: apply-review (everything accepted) still
    gives each annotation id its own refined mask."""
    images, coarse, data = build_coco(tmp_path, stems=("0",))
    refined = tmp_path / "refined.json"
    run(CocoDataset(images, coarse, refined), BoxRefiner(), progress=False)
    shuffled = json.loads(refined.read_text())
    shuffled["annotations"].reverse()
    refined.write_text(json.dumps(shuffled))

    report = review_id(cli, tmp_path / "report", images, coarse, refined)
    decisions = write_decisions(tmp_path / "d.json", report)  # nothing decided: every object refined
    invoke(
        cli,
        "apply-review",
        "--decisions",
        decisions,
        "--images",
        images,
        "--coarse",
        coarse,
        "--refined",
        refined,
        "--out",
        tmp_path / "final.json",
    )

    final = {a["id"]: a for a in json.loads((tmp_path / "final.json").read_text())["annotations"]}
    height, width = data["images"][0]["height"], data["images"][0]["width"]
    for annotation in data["annotations"]:
        if not annotation["iscrowd"]:
            expected = box_mask(decoded(annotation, height, width))
            np.testing.assert_array_equal(decoded(final[annotation["id"]], height, width), expected)


def test_split_like_regions_gives_each_region_the_nearest_pixels() -> None:
    regions = np.zeros((2, 1, 10), bool)
    regions[0, 0, 0:2] = True  # class 1, left
    regions[1, 0, 8:10] = True  # class 1, right
    label_map = np.array([[1, 1, 1, 1, 0, 0, 1, 1, 1, 2]], np.uint8)
    shares = split_like_regions(label_map, regions, [1, 1])
    np.testing.assert_array_equal(shares[0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(shares[1, 0], [0, 0, 0, 0, 0, 0, 1, 1, 1, 0])


def test_detect_format_without_scores_reads_the_first_png(tmp_path) -> None:
    from PIL import Image

    (tmp_path / "binary").mkdir()
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "binary" / "a.png")
    (tmp_path / "classes").mkdir()
    Image.fromarray(np.array([[0, 7, 255]], np.uint8)).save(tmp_path / "classes" / "a.png")
    assert pair_format(tmp_path / "binary", tmp_path / "none") == "masks"
    assert pair_format(tmp_path / "classes", tmp_path / "none") == "label-maps"
    (tmp_path / "x.json").write_text("{}")
    assert pair_format(tmp_path / "x.json", tmp_path / "none") == "coco"


def test_one_detector_strict_for_eval_by_values_for_review(tmp_path) -> None:
    """Label maps in subfolders: eval's strict detection refuses them (layout and values disagree),
    review takes them by their values; GrabCut's 128/255 masks in subfolders are masks for both."""
    from samrefiner.io.formats import FormatUnclear, detect_format

    (tmp_path / "maps" / "train").mkdir(parents=True)
    Image.fromarray(np.array([[0, 1, 2]], np.uint8)).save(tmp_path / "maps" / "train" / "a.png")
    (tmp_path / "grabcut" / "img").mkdir(parents=True)
    Image.fromarray(np.array([[0, 128, 255]], np.uint8)).save(tmp_path / "grabcut" / "img" / "0.png")
    reason = "train/a.png holds several values, yet the PNGs lie in subfolders"
    with pytest.raises(FormatUnclear, match=f"cannot tell masks from label maps \\({reason}\\)"):
        detect_format(tmp_path / "maps")
    assert pair_format(tmp_path / "maps", tmp_path / "none") == "label-maps"
    assert detect_format(tmp_path / "grabcut") == pair_format(tmp_path / "grabcut", tmp_path / "none") == "masks"


def test_objects_refine_kept_coarse_show_first_and_apply(cli, tmp_path) -> None:
    """A real `samrefiner refine` output where one object kept its coarse mask (an empty coarse
    mask: null predicted IoU in scores.jsonl) is reviewed and applied like any other."""
    images, coarse, refined = tmp_path / "images", tmp_path / "coarse", tmp_path / "refined"
    images.mkdir()
    (images / "swan.jpg").symlink_to(DAVIS / "JPEGImages/blackswan/00000.jpg")
    (coarse / "swan").mkdir(parents=True)
    shutil.copy(DAVIS / "Annotations/blackswan/00000.png", coarse / "swan" / "0.png")
    Image.fromarray(np.zeros((480, 854), np.uint8)).save(coarse / "swan" / "1.png")
    cli.invoke(
        app,
        [
            "refine",
            "--images",
            str(images),
            "--masks",
            str(coarse),
            "--out",
            str(refined),
            "--model",
            str(SAM_REF / "reduced_sam.pth"),
            "--iterations",
            "1",
            "--no-progress",
        ],
    )
    (line,) = (refined / "scores.jsonl").read_text().splitlines()
    predicted = {item["id"]: item["predicted_iou"] for item in json.loads(line)["objects"]}
    assert predicted["1.png"] is None and predicted["0.png"] is not None

    report = review_id(cli, tmp_path / "report", images, coarse, refined)
    first, second = all_entries(tmp_path / "report")
    assert (first["object"], first["kept"], first["predicted"], first["score"]) == ("1.png", True, None, 0.0)
    assert (second["object"], second["kept"], second["predicted"]) == ("0.png", False, round(predicted["0.png"], 4))
    assert read_manifest(tmp_path / "report")["hasPredicted"]

    decisions = write_decisions(tmp_path / "d.json", report, ("swan", "0.png", "reject"), ("swan", "1.png", "accept"))
    result = invoke(
        cli,
        "apply-review",
        "--decisions",
        decisions,
        "--images",
        images,
        "--coarse",
        coarse,
        "--refined",
        refined,
        "--out",
        tmp_path / "final",
    )
    assert "1 images written: 1 objects refined, 1 kept coarse; 2 decisions applied" in result.stdout
    np.testing.assert_array_equal(read_mask(tmp_path / "final/swan/0.png"), read_mask(coarse / "swan/0.png"))
    assert not read_mask(tmp_path / "final/swan/1.png").any()


def test_apply_review_refuses_decisions_from_another_report(cli, davis, tmp_path) -> None:
    """Decisions exported from the review of another refine output would apply to nothing: refused."""
    report = review_id(cli, tmp_path / "report", davis["images"], davis["coarse"], davis["refined"])
    other_refined = tmp_path / "other"
    run(MaskFolders(davis["images"], davis["coarse"], other_refined), BoxRefiner(), limit=2, progress=False)
    other = review_id(cli, tmp_path / "other-report", davis["images"], davis["coarse"], other_refined)
    assert other != report
    foreign = write_decisions(tmp_path / "foreign.json", other, ("blackswan/00000", "00000.png", "reject"))
    arguments = ("--images", davis["images"], "--coarse", davis["coarse"], "--refined", davis["refined"])
    message = input_error(cli, "apply-review", "--decisions", foreign, *arguments, "--out", tmp_path / "final")
    assert message.startswith(f"{foreign}: exported from review report {other}") and report in message
    assert not (tmp_path / "final").exists()
    anonymous = write_decisions(tmp_path / "anonymous.json", None, ("blackswan/00000", "00000.png", "reject"))
    assert "names no review report" in input_error(
        cli, "apply-review", "--decisions", anonymous, *arguments, "--out", tmp_path / "final"
    )
    own = write_decisions(tmp_path / "own.json", report, ("blackswan/00000", "00000.png", "reject"))
    result = invoke(cli, "apply-review", "--decisions", own, *arguments, "--out", tmp_path / "final")
    assert "1 decisions applied" in result.stdout


def test_jpeg_coarse_masks_pair_with_their_png_outputs(cli, tmp_path) -> None:
    """refine writes a JPEG mask `00000.jpg` as `00000.png`; review found "no refined mask" for it."""
    images, coarse = tmp_path / "images", tmp_path / "masks"
    (images / "blackswan").mkdir(parents=True)
    (coarse / "blackswan").mkdir(parents=True)
    shutil.copy(DAVIS / "JPEGImages" / "blackswan" / "00000.jpg", images / "blackswan")
    mask = read_mask(DAVIS / "Annotations" / "blackswan" / "00000.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(coarse / "blackswan" / "00000.jpg", quality=95)
    with pytest.warns(UserWarning, match="JPEG"):
        run(MaskFolders(images, coarse, tmp_path / "refined"), BoxRefiner(), progress=False)
    assert (tmp_path / "refined" / "blackswan" / "00000.png").is_file()
    result = invoke(
        cli,
        "review",
        "--images",
        images,
        "--coarse",
        coarse,
        "--refined",
        tmp_path / "refined",
        "--out",
        tmp_path / "report",
    )
    assert "1 objects (masks)" in result.stdout
    (entry,) = all_entries(tmp_path / "report")
    assert entry["object"] == "00000.jpg" and entry["change"] < 1.0
