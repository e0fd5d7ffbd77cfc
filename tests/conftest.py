"""Shared pytest fixtures for the hardware tests."""

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: reproducible, different per test."""
    seed = sum(request.node.nodeid.encode())
    return np.random.default_rng(seed)
