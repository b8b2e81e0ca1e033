
import pytest
import torch

torch.set_num_threads(1)  # small models: one thread is as fast, and timings do not fight over 2 cores


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
