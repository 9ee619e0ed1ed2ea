"""Every private Ray name voxray uses still exists in the installed Ray (``deployments.ray_compat``).

An upgrade that renames one fails here, instead of drains silently closing sessions or the
exposure check silently passing. Modules that need an engine to import (Ray's LLM stack needs
vLLM) are read as source, which the Ray wheel always ships.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from deployments import ray_compat
from deployments.ray_compat import PRIVATE_NAMES, PrivateName


def module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not in the installed Ray"
    return Path(spec.origin).read_text()


@pytest.mark.parametrize("private", PRIVATE_NAMES, ids=lambda p: f"{p.module}:{p.name}")
def test_private_name_exists_in_the_installed_ray(private: PrivateName) -> None:
    source = module_source(private.module)
    kind, _, attr = private.name.rpartition(" ") if " " in private.name else ("", "", private.name)
    if private.name.startswith("self."):
        assert re.search(rf"\b{re.escape(private.name)}\s*(:[^=\n]*)?=", source), (
            f"{private.module} no longer assigns {private.name} ({private.why})"
        )
    elif kind == "def":
        assert re.search(rf"\bdef {re.escape(attr)}\(", source), (
            f"{private.module} has no {attr}() ({private.why})"
        )
    else:
        assert hasattr(importlib.import_module(private.module), attr), f"{private.module}.{attr} is gone"


def private_uses(path: Path) -> set[str]:
    """Names of private Ray modules a file imports or reaches (``ray._private``, ``._internal``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ray"):
            if "._private" in node.module or "._internal" in node.module:
                found.add(node.module)
        elif isinstance(node, ast.Attribute) and node.attr in ("_private", "_internal"):
            found.add(ast.unparse(node))
    return found


def test_no_other_module_touches_ray_internals() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = {
        str(path.relative_to(root)): uses
        for folder in ("serve_app", "deployments")
        for path in sorted((root / folder).rglob("*.py"))
        if path.name != "ray_compat.py" and (uses := private_uses(path))
    }
    assert offenders == {}, "keep Ray's private internals behind deployments/ray_compat.py"


def test_every_private_attribute_read_is_listed() -> None:
    """The attributes ray_compat reads with a leading underscore are all in PRIVATE_NAMES."""
    source = Path(ray_compat.__file__).read_text()
    code = source[source.index("def current_replica") :]
    read = set(re.findall(r"(?<![\w.])\w+\._([a-z]\w*)", code)) | set(re.findall(r'"_([a-z]\w*)"', code))
    listed = {p.name.rpartition(".")[2].rpartition(" ")[2].lstrip("_") for p in PRIVATE_NAMES}
    assert read <= listed | {"private"}, read - listed
