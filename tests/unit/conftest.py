"""Fixtures for the unit tests."""

from __future__ import annotations

import pytest

from course_utils.runtime import torch_threads


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two torch threads on a 2-core machine shared with other jobs run 10-20x slower than one
    (OpenMP threads wait on each other); small models lose nothing with one thread. A module uses
    it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    with torch_threads(1):
        yield
