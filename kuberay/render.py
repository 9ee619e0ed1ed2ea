"""Write the RayService manifests from the Serve configs they serve, so the two never drift.

    python kuberay/render.py           # (re)write kuberay/ray-service.<variant>.yaml
    python kuberay/render.py --check   # exit 1 with a diff if the committed files differ

Each manifest's ``serveConfigV2`` is the text of its ``configs/`` file, verbatim; the
cluster around it (head, worker groups, autoscaler, Redis-backed GCS fault tolerance,
Secrets, drain settings) is described once below, with each variant's differences.
``tests/unit/test_kuberay.py`` checks the committed files against this and against the
RayService CRD and Kubernetes' own schemas.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_app.serve_env import SERVE_ENVIRONMENT, SESSION_DRAIN_S  # noqa: E402

RAY_VERSION = "2.60.0"
VOXRAY_VERSION = "0.1.0"
IMAGE_REPOSITORY = "ghcr.io/voxray/voxray"  # where `docker push` puts your build: set yours
SECRET = "voxray-secrets"  # keys: api-keys, hf-token (kuberay/secrets.example.yaml)
REDIS_SECRET = "voxray-redis"  # key: password (kuberay/redis.yaml)
REDIS_ADDRESS = "voxray-redis:6379"

# Variant: its Serve config, image target, and worker groups.
VARIANTS: dict[str, dict[str, Any]] = {
    "cpu": {
        "config": "configs/k8s-cpu.yaml",
        "workers": [
            # Ingress replicas and the embedded models (Whisper base, Qwen 0.5B, Piper): ~3 GB.
            {"name": "cpu", "min": 1, "max": 6, "cpu": "8", "memory": "16Gi"},
        ],
    },
    "gpu": {
        "config": "configs/gpu.yaml",
        "workers": [
            # Ingress replicas (VAD) and the LLM router; Ray's scheduler keeps CPU-only actors
            # off GPU nodes while CPU nodes have room (scheduler_avoid_gpu_nodes).
            {"name": "cpu", "min": 1, "max": 10, "cpu": "8", "memory": "16Gi"},
            # One GPU per pod: ASR 0.25 + TTS 0.25 + vLLM 0.5 share it (configs/gpu.yaml).
            {"name": "gpu", "min": 1, "max": 4, "cpu": "8", "memory": "48Gi", "gpu": "1"},
        ],
    },
}


def image(variant: str) -> str:
    """The pinned image tag of a variant (``docker build --target <variant>``)."""
    return f"{IMAGE_REPOSITORY}:{VOXRAY_VERSION}-ray{RAY_VERSION}-{variant}"


def environment(variant: str) -> list[dict[str, Any]]:
    """Container env: Serve's settings (``serve_app.serve_env``) and the Secrets."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in SERVE_ENVIRONMENT.items()]
    env.append(secret_env("VOXRAY_API_KEYS", "api-keys"))
    if variant == "gpu":
        env.append(secret_env("HF_TOKEN", "hf-token"))  # Llama 3.2 is gated
    return env


def secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


def resources(cpu: str, memory: str, gpu: str | None = None) -> dict[str, Any]:
    """Requests equal to limits, as Ray asks: it sizes itself from the limits."""
    amounts: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpu is not None:
        amounts["nvidia.com/gpu"] = gpu
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container(variant: str, ports: list[tuple[str, int]], res: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "ray-head" if any(n == "dashboard" for n, _ in ports) else "ray-worker",
        "image": image(variant),
        "env": environment(variant),
        "ports": [{"name": name, "containerPort": port} for name, port in ports],
        "resources": res,
        # Ray stops its processes cleanly on SIGTERM before the pod goes.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }


SERVE_PORTS = [("serve", 8000), ("metrics", 8080)]
HEAD_PORTS = [("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), *SERVE_PORTS]


def head_group(variant: str) -> dict[str, Any]:
    return {
        # num-cpus 0: no Serve replica lands on the head, whose loss GCS FT must survive.
        "rayStartParams": {"num-cpus": "0", "metrics-export-port": "8080", "dashboard-host": "0.0.0.0"},
        "template": {
            "spec": {
                "containers": [container(variant, HEAD_PORTS, resources("2", "8Gi"))],
            }
        },
    }


def worker_group(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = {
        # Serve drains the Ingress replicas here before the autoscaler removes the pod, so
        # this only bounds Ray's own shutdown.
        "terminationGracePeriodSeconds": 120,
        "containers": [
            container(variant, SERVE_PORTS, resources(spec["cpu"], spec["memory"], spec.get("gpu")))
        ],
    }
    if spec.get("gpu"):
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "groupName": spec["name"],
        "replicas": spec["min"],
        "minReplicas": spec["min"],
        "maxReplicas": spec["max"],
        "rayStartParams": {"metrics-export-port": "8080"},
        "template": {"spec": pod},
    }


def ray_service(variant: str) -> dict[str, Any]:
    """The RayService of one variant, ``serveConfigV2`` included."""
    spec = VARIANTS[variant]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": f"voxray-{variant}", "labels": {"app.kubernetes.io/name": "voxray"}},
        "spec": {
            # A rayClusterConfig change brings up a new cluster and moves traffic to it; the
            # old one, with its live sessions, is deleted this long after.
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterDeletionDelaySeconds": SESSION_DRAIN_S,
            "serveConfigV2": (ROOT / spec["config"]).read_text(),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": 300,
                    "resources": resources("500m", "512Mi"),
                },
                "gcsFaultToleranceOptions": {
                    "redisAddress": REDIS_ADDRESS,
                    "redisPassword": {
                        "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": "password"}}
                    },
                },
                "headGroupSpec": head_group(variant),
                "workerGroupSpecs": [worker_group(variant, w) for w in spec["workers"]],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (``serveConfigV2``) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(variant: str) -> str:
    """The text of ``kuberay/ray-service.<variant>.yaml``."""
    header = (
        f"# voxray RayService, variant {variant}: generated by kuberay/render.py from "
        f"{VARIANTS[variant]['config']}.\n"
        "# Edit that config (or render.py), then run `python kuberay/render.py`.\n"
        '# README: "Deploy on Kubernetes".\n'
    )
    return header + yaml.dump(ray_service(variant), Dumper=_Dumper, sort_keys=False, width=120)


def manifest_path(variant: str) -> Path:
    return ROOT / "kuberay" / f"ray-service.{variant}.yaml"


def main(argv: list[str] | None = None) -> int:
    """Write the manifests, or with ``--check`` report whether they are current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed manifest differs")
    args = parser.parse_args(argv)
    stale = 0
    for variant in VARIANTS:
        path, text = manifest_path(variant), render(variant)
        current = path.read_text() if path.is_file() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path))
            )
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
