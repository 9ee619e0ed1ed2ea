"""Optional inference engines in tests: skip without them, unless CI says they must be there.

Tests of a heavy engine (NeMo, vLLM) start with ``require_engine(name, module)``. Where the
engine is not installed (the default CPU venv) the module is skipped; where
``VOXRAY_REQUIRE_ENGINES`` names the engine (``VOXRAY_REQUIRE_ENGINES=nemo,vllm`` in the CI
job that installs them) a missing engine fails the run instead, so such a job cannot pass by
silently skipping everything it exists to test.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from types import ModuleType

import pytest

REQUIRE_ENV = "VOXRAY_REQUIRE_ENGINES"


def required_engines() -> set[str]:
    """Engine names listed in ``VOXRAY_REQUIRE_ENGINES`` (comma or space separated)."""
    return {name.lower() for name in re.split(r"[\s,]+", os.environ.get(REQUIRE_ENV, "")) if name}


def require_engine(name: str, module: str) -> ModuleType:
    """Import ``module`` of engine ``name``, or skip (or fail) the calling test module.

    Call it at module level, before importing anything that needs the engine.

    Args:
        name: The engine's name as ``VOXRAY_REQUIRE_ENGINES`` lists it (``nemo``, ``vllm``).
        module: The module to import, e.g. ``nemo.collections.asr``.

    Returns:
        The imported module.

    Raises:
        pytest.skip.Exception: The engine is not installed and not required.
        pytest.fail.Exception: The engine is not installed but ``VOXRAY_REQUIRE_ENGINES``
            names it.
    """
    try:
        installed = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package of a dotted name is missing
        installed = False
    if not installed:
        skip_unless_required(name, f"engine {name!r}: module {module!r} is not installed", "it")
    # Installed: an import error now means a broken install, which must not pass as a skip.
    return importlib.import_module(module)


def skip_unless_required(name: str, message: str, pronoun: str = "them") -> None:
    """Skip the calling test (module) for a missing engine or client, or fail if it is required.

    Args:
        name: Its name as ``VOXRAY_REQUIRE_ENGINES`` lists it (``nemo``, ``speechmatics``, ``riva``).
        message: What is missing and how to install it.
        pronoun: ``it`` or ``them``, for the failure's "but ... requires it".

    Raises:
        pytest.skip.Exception: Not required.
        pytest.fail.Exception: ``VOXRAY_REQUIRE_ENGINES`` names it.
    """
    if name.lower() in required_engines():
        pytest.fail(f"{message}, but {REQUIRE_ENV} requires {pronoun}", pytrace=False)
    pytest.skip(message, allow_module_level=True)
