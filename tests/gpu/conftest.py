"""GPU tests: the GPU backends on a real CUDA device, skipped where there is none.

They run the same tiny models as ``tests/models`` (built from configs, nothing downloaded)
through the same backends with ``device: cuda``. Run them on a GPU machine with the ``gpu``
extra installed: ``pytest tests/gpu``.
"""

from __future__ import annotations

import importlib.util

import pytest


def cuda_available() -> bool:
    """True where torch is installed and sees a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch with a visible GPU)")
    for item in items:
        if "tests/gpu/" in item.nodeid:
            item.add_marker(skip)
