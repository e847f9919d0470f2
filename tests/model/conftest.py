"""Fixtures for the model tests: one tiny model root per session (written by ``model.tiny``)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _single_cpu_thread():
    """The model tests use tiny tensors: one intra-op thread is faster, and far faster on a busy shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    from model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-root"), seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_root):
    from model.pipeline import StepVideoPipeline

    return StepVideoPipeline.from_pretrained(tiny_root, preset="tiny", device="cpu")


@pytest.fixture
def cpu_generator():
    return torch.Generator("cpu").manual_seed(0)
