"""Hostile YOLO inputs, generated the way fuzzers work (Hypothesis): malformed label lines and
data.yaml files through `samrefiner refine --yolo` (the reduced model, loaded once). Each run must
give the correct output (exit 0) when every line is valid, else the image in the errors file with
exit 1 (a bad label file fails its image) or exit 2 with one `samrefiner: error:` line (a bad
data.yaml fails the run before any image); never a traceback; the inputs unchanged."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_refine_cli import FAST, load_the_model_once, run_cli  # noqa: F401  (the fixture)

from io_fakes import tree_digest

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
CLASSES = 3
SIZE = (40, 32)  # width, height

number_tokens = st.one_of(
    st.floats(0, 1).map(lambda v: f"{v:.6f}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "1", "1.0", "-0.0", "1e-3", "nan", "inf", "-1", "2", "0x1", "", "½", "0,5", "1_0"]),
)
class_tokens = st.one_of(
    st.integers(-2, CLASSES + 1).map(str), st.sampled_from(["0.0", "1.000000e+00", "2.5", "a", "nan", "1e30"])
)
lines = st.one_of(
    st.just(""),
    st.builds(lambda c, v: " ".join([c, *v]), class_tokens, st.lists(number_tokens, min_size=0, max_size=10)),
    st.builds(lambda c, v: " ".join([c, *v]), class_tokens, st.lists(st.floats(0, 1).map(str), min_size=4, max_size=4)),
    st.text(st.characters(codec="utf-8"), max_size=20).map(lambda text: text.replace("\n", " ").replace("\r", " ")),
)
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.integers(-1, 4), st.text(max_size=4)), inner, max_size=3),
    ),
    max_leaves=6,
)
VALID_CONFIGS = [
    {"names": [f"c{i}" for i in range(CLASSES)], "nc": CLASSES},  # supervision's layout: images/ beside it
    {"path": "/elsewhere", "val": "images", "names": {i: f"c{i}" for i in range(CLASSES)}},  # Ultralytics'
]
configs = st.one_of(  # (data.yaml, whether it is known to be valid)
    st.sampled_from(VALID_CONFIGS).map(lambda config: (config, True)),
    st.fixed_dictionaries({"val": st.just("images"), "names": yaml_values}).map(lambda config: (config, False)),
    st.fixed_dictionaries({"val": st.one_of(st.just("images"), yaml_values), "nc": yaml_values}).map(
        lambda c: (c, False)
    ),
    st.fixed_dictionaries({"train": yaml_values, "names": st.just(VALID_CONFIGS[1]["names"])}).map(
        lambda c: (c, False)
    ),
)


def valid_line(line: str) -> bool:
    """An independent statement of the format: blank, or a whole class id below CLASSES and a box
    (4 values) or a polygon (an even number >= 6 of values), every value a finite number in 0-1."""
    tokens = line.split()
    if not tokens:
        return True
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        return False
    class_id, coordinates = values[0], values[1:]
    return (
        math.isfinite(class_id)
        and class_id == int(class_id)
        and 0 <= class_id < CLASSES
        and (len(coordinates) == 4 or (len(coordinates) >= 6 and len(coordinates) % 2 == 0))
        and all(math.isfinite(value) and 0 <= value <= 1 for value in coordinates)
    )


def build(root: Path, label_lines: list[str], config: dict) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "images" / "a.png")
    label = root / "labels" / "a.txt"
    label.write_text("\n".join(label_lines) + "\n", encoding="utf-8")
    (root / "data.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return label


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(label_lines=st.lists(lines, min_size=1, max_size=4), config=configs)
@example(label_lines=["1.0 0.5 0.5 0.2 0.2", "", "2 0.1 0.1 0.9 0.1 0.5 0.8"], config=(VALID_CONFIGS[0], True))
@example(label_lines=["0 0.1 0.1 0.9 0.1 0.5 0.8 0.7"], config=(VALID_CONFIGS[1], True))
def test_hostile_lines_and_data_yaml(label_lines, config, capsys, monkeypatch):
    config, known_valid = config
    work = Path(tempfile.mkdtemp())
    try:
        root, out = work / "yolo", work / "out"
        label = build(root, label_lines, config)
        before = tree_digest(root)
        code, stdout, stderr = run_cli(capsys, monkeypatch, "refine", *FAST, "--yolo", root, "--out", out)
        assert "Traceback" not in stderr + stdout and tree_digest(root) == before
        if code == 2:
            assert not known_valid, stderr
            assert stderr.count("\n") == 1 and stderr.startswith("samrefiner: error: ")
            assert "data.yaml" in stderr  # only a bad data.yaml stops a run
            return
        read_lines = label.read_text(encoding="utf-8").splitlines()
        if all(valid_line(line) for line in read_lines):
            assert code == 0, stderr
            written = (out / "labels" / "a.txt").read_text().splitlines()
            assert [bool(line.strip()) for line in written] == [bool(line.strip()) for line in read_lines]
            (out / "data.yaml").write_text(yaml.safe_dump({"names": [f"c{i}" for i in range(CLASSES)]}))
            read_back = sv.DetectionDataset.from_yolo(str(root / "images"), str(out / "labels"), str(out / "data.yaml"))
            assert len(read_back.annotations[str(root / "images" / "a.png")]) == sum(
                bool(line.strip()) for line in read_lines
            )
        else:
            assert code == 1 and f"{label}:" in (out / "errors.txt").read_text()
    finally:
        shutil.rmtree(work)
