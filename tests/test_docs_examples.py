"""Every Python example of README.md and docs/*.md runs as written, with the reduced SAM standing
in for a model it would download (see docs_examples.py for what the prose gives an example).
Examples that import FiftyOne run in test_fiftyone.py (they need its database)."""

from __future__ import annotations

import importlib.util

import pytest

import samrefiner
from conftest import DATA, SAM_REF, SHARED
from docs_examples import examples, given_names, offline_loader, run_example

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
EXAMPLES = [example for example in examples() if "fiftyone" not in example.needs]


@pytest.fixture(scope="module")
def given(reduced_model) -> dict[str, object]:
    return given_names(reduced_model, DATA)


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_documented_example_runs_as_written(example, given, tmp_path, monkeypatch):
    for package in sorted(example.needs):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{example.name} needs {package}")
    monkeypatch.setattr(samrefiner, "load_model", offline_loader(SAM_REF / "reduced_sam.pth"))
    run_example(example, given, SHARED, tmp_path / "work")


def test_the_documentation_has_python_examples():
    assert len(EXAMPLES) >= 2 and any("supervision" in example.needs for example in EXAMPLES)
