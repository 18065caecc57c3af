"""Fixtures for the multi-process system tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A publisher repository with app ``web``; origin, trackers and agents are started by the test
    and all stopped afterwards."""
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()
