"""Fixtures shared by the whole suite."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared"  # the data folder beside the project, not the `shared` package


@pytest.fixture(scope="session")
def cvat_schema_path() -> Path:
    path = SHARED_DATA / "cvat" / "schema.yml"
    assert path.is_file(), f"CVAT schema missing at {path} (../shared beside the project)"
    return path


@pytest.fixture(scope="session")
def cvat_assets() -> Path:
    return SHARED_DATA / "cvat" / "assets"
