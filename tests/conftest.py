"""Shared test fixtures: where ../shared lives, and the reduced reference SAM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAMREFINER_SHARED", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures"
SAM_REF = FIXTURES / "sam_reference"
HQ_REF = FIXTURES / "hq_reference"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED} (set SAMREFINER_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def reduced_model():
    """The reduced reference SAM (random weights), loaded like an official checkpoint."""
    from samrefiner import load_model

    return load_model(str(SAM_REF / "reduced_sam.pth"))


@pytest.fixture()
def one_image(tmp_path):
    """GrabCut's fullmoon (symlinks): images/fullmoon.png, masks/fullmoon.png."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    (images / "fullmoon.png").symlink_to(DATA / "grabcut/images/fullmoon.png")
    (masks / "fullmoon.png").symlink_to(DATA / "grabcut/gt/fullmoon.png")
    return images, masks
