import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_train():
    """A training config small enough for end-to-end tests."""
    from supermask import TrainConfig

    return TrainConfig(epochs=1, batch_size=256)
