"""Loading the files in kuberay/ for the tests in ``test_kuberay*.py``."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
# KubeRay master of August 2026; CI has ../shared beside the checkout.
CRD_DIR = ROOT.parent / "shared" / "reference" / "kuberay-crd"


def _load_render() -> Any:
    spec = importlib.util.spec_from_file_location("kuberay_render", KUBERAY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


render = _load_render()
VARIANTS = sorted(render.VARIANTS)


def documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def service(variant: str) -> dict[str, Any]:
    """The committed RayService of a variant."""
    [doc] = documents(render.manifest_path(variant))
    return doc


def cluster(variant: str) -> dict[str, Any]:
    """Its ``rayClusterConfig``."""
    return service(variant)["spec"]["rayClusterConfig"]


def groups(variant: str) -> list[dict[str, Any]]:
    """The head group spec, then each worker group spec."""
    spec = cluster(variant)
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def ray_containers(variant: str) -> list[dict[str, Any]]:
    """The Ray container (the first) of the head, then of each worker group."""
    return [g["template"]["spec"]["containers"][0] for g in groups(variant)]


def serve_config(variant: str) -> dict[str, Any]:
    """Its ``serveConfigV2``, parsed."""
    return yaml.safe_load(service(variant)["spec"]["serveConfigV2"])


def app_deployment(variant: str, name: str) -> dict[str, Any]:
    """One deployment's options in the variant's (only) application."""
    [app] = serve_config(variant)["applications"]
    return next(d for d in app["deployments"] if d["name"] == name)


@functools.cache
def crd_schema(name: str = "ray.io_rayservices.yaml", version: str = "v1") -> dict[str, Any]:
    """The OpenAPI v3 schema of one version of a KubeRay CRD (shared: do not modify it)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 1 MB of YAML
    crd = yaml.load((CRD_DIR / name).read_text(), Loader=loader)
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]
