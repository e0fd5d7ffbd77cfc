"""Shared pytest fixtures for the hardware tests."""

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: reproducible, different per test."""
    seed = sum(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True, scope="session")
def synth_cache(tmp_path_factory):
    """Board builds keep Yosys's outputs in a folder of the session's, not the user's
    ~/.cache/nitrod/synth (boards/synth_cache.py)."""
    import os
    folder = tmp_path_factory.getbasetemp() / "synth-cache"
    saved = os.environ.get("NITROD_SYNTH_CACHE")
    os.environ["NITROD_SYNTH_CACHE"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("NITROD_SYNTH_CACHE", None)
    else:
        os.environ["NITROD_SYNTH_CACHE"] = saved
