"""Shared fixtures. Tests that read ../shared (protocol lists, media) skip with a reason when it is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROTOCOLS = SHARED / "research" / "protocols"


def read_list(path: Path) -> list[str]:
    """Lines of a ../shared list file, without its `#` provenance line."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


def read_shared_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(read_list(path)))


@pytest.fixture(scope="session")
def protocols_dir() -> Path:
    """The official protocol lists in ../shared/research/protocols (skips when the checkout has no shared/)."""
    if not PROTOCOLS.is_dir():
        pytest.skip(f"{PROTOCOLS} not found: these checks need the shared/ folder beside the checkout")
    return PROTOCOLS
