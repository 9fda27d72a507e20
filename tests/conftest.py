"""Fixtures shared by several test files (plain shared data and helpers: tests/helpers.py)."""

import pytest
import torch


@pytest.fixture()
def one_thread():
    """Torch uses one thread in this test (spawned workers set it themselves). The multi-process
    equality tests need it: with several threads the CPU backward (the embedding's, for one) sums in
    a thread-dependent order, so identical layouts differ by ~1e-7, rounding, not a layout error."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    """The ``tiny-random`` model's tokenizer (SmolLM2's), loaded once for the session; tests only
    read it."""
    from sdar.models.loading import ModelConfig, load_policy

    return load_policy(ModelConfig(name="tiny-random"))[1]
