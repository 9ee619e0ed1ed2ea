"""Write the RayService manifests from the Serve configs they serve, so the two never drift.

    python kuberay/render.py           # (re)write kuberay/ray-service.<variant>.yaml
    python kuberay/render.py --check   # exit 1 with a diff if the committed files differ

Each manifest's ``serveConfigV2`` is the text of its ``configs/`` file, verbatim; the
cluster around it (head, worker groups, autoscaler, Redis-backed GCS fault tolerance,
Secrets, drain settings) is described once below, with each variant's differences in
:data:`VARIANTS`. ``tests/unit/test_kuberay*.py`` check the committed files against this,
the RayService CRD, KubeRay's own validation and Kubernetes' schemas.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: serve_app is importable from the repo root
    sys.path.insert(0, str(ROOT))

from serve_app.server.serve_env import SERVE_ENVIRONMENT, SESSION_DRAIN_S  # noqa: E402

RAY_VERSION = "2.60.0"
VOXRAY_VERSION = "0.1.0"
IMAGE_REPOSITORY = "ghcr.io/voxray/voxray"  # where `docker push` puts your build: set yours
SECRET = "voxray-secrets"  # keys: api-keys, hf-token (kuberay/secrets.example.yaml)
REDIS_SECRET = "voxray-redis"  # key: password (kuberay/redis.yaml)
REDIS_ADDRESS = "voxray-redis:6379"  # the Service in kuberay/redis.yaml, or a managed Redis
Ports = tuple[tuple[str, int], ...]  # (name, containerPort)
HTTP_PORT = ("serve", 8000)  # Serve's HTTP port (HAProxy's, in HAProxy mode): KubeRay's name
METRICS_PORT = ("metrics", 8080)
HEAD_PORTS: Ports = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))  # and serve_ports()
# The gRPC port's name. KubeRay (1.6 and newer) builds the serve Service from the head
# container's ports named "serve" or "serve-<anything>", and keeps a port of spec.serveService
# only where its name matches one of those: a port named plain "grpc" would be left out.
GRPC_PORT_NAME = "serve-grpc"
# L7 load balancers (Gateway API implementations, cloud LBs) read a Service port's appProtocol
# to pick the protocol they speak to the pods: gRPC is HTTP/2 without TLS, as HAProxy serves it.
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"
# KubeRay's own worker readiness checks (raylet and Serve's proxy), which a probe of ours
# replaces, so the probe below keeps them and adds voxray's gRPC health and /readyz.
RAYLET_HEALTH = "http://localhost:52365/api/local_raylet_healthz"
PROXY_HEALTH = "http://localhost:8000/-/healthz"
GRPC_HEALTH_TIMEOUT_S = 3  # the deadline of the gRPC health call (grpc.health.v1.Health/Check)
PYTHON_START_S = 2  # the gRPC probe's Python starting (about 0.2 s; slack for a busy node)
READYZ_TIMEOUT_S = 25  # the Ingress gives each model 20 s to answer its tiny request
READY_BODY = """'"status":"ready"'"""  # /readyz's JSON, as Starlette writes it (no spaces)
# A worker pod goes only once Serve has drained it (no replica left), so this bounds Ray's
# own shutdown, not the sessions' (those drain for the Ingress's graceful_shutdown_timeout_s).
WORKER_TERMINATION_GRACE_S = 120


@dataclass(frozen=True)
class Group:
    """One Ray worker group: pods of one shape, scaled by the autoscaler between bounds.

    Attributes:
        name: The group's name (``groupName``), also the Ray node type.
        min_replicas: Pods kept even when idle.
        max_replicas: The most pods the autoscaler may add.
        cpu: CPU request and limit of each pod; Ray advertises this many CPUs.
        memory: Memory request and limit of each pod.
        gpu: NVIDIA GPUs per pod, or ``None`` for a CPU-only group.
    """

    name: str
    min_replicas: int
    max_replicas: int
    cpu: str
    memory: str
    gpu: str | None = None


@dataclass(frozen=True)
class Variant:
    """What differs between the manifests: the Serve config, worker groups and Secrets.

    Attributes:
        config: The Serve config embedded as ``serveConfigV2``, relative to the repo root.
        workers: The worker groups.
        secret_env: Container env vars read from :data:`SECRET`, as (name, key) pairs.
    """

    config: str
    workers: tuple[Group, ...]
    secret_env: tuple[tuple[str, str], ...]


VARIANTS: dict[str, Variant] = {
    "cpu": Variant(
        config="configs/k8s-cpu.yaml",
        # Ingress replicas and the embedded models (Whisper base, Qwen 0.5B, Piper, GE2E: ~3 GB).
        # Seven 8-CPU pods hold every deployment at its max_replicas (52 CPUs).
        workers=(Group("cpu", 1, 7, cpu="8", memory="16Gi"),),
        secret_env=(("VOXRAY_API_KEYS", "api-keys"),),
    ),
    "gpu": Variant(
        config="configs/gpu.yaml",
        workers=(
            # Ingress replicas (VAD) and the LLM router. Ray keeps CPU-only actors off GPU
            # nodes while CPU nodes have room (scheduler_avoid_gpu_nodes).
            Group("cpu", 1, 10, cpu="8", memory="16Gi"),
            # One GPU per pod, shared by fractions: ASR 0.25, TTS 0.2, Speaker 0.05, vLLM 0.5
            # (configs/gpu.yaml). Six hold every GPU deployment at its max_replicas.
            Group("gpu", 1, 6, cpu="8", memory="48Gi", gpu="1"),
        ),
        secret_env=(("VOXRAY_API_KEYS", "api-keys"), ("HF_TOKEN", "hf-token")),  # Llama is gated
    ),
}


def image(variant: str) -> str:
    """The pinned image of a variant.

    Args:
        variant: A key of :data:`VARIANTS`, also the Dockerfile target that builds it.

    Returns:
        ``<repository>:<voxray version>-ray<Ray version>-<variant>``.
    """
    return f"{IMAGE_REPOSITORY}:{VOXRAY_VERSION}-ray{RAY_VERSION}-{variant}"


def secret_ref(name: str, key: str) -> dict[str, Any]:
    """A ``valueFrom`` that reads one key of a Secret.

    Args:
        name: The Secret's name.
        key: The key within it.

    Returns:
        The ``valueFrom`` mapping of an env var (or of KubeRay's ``redisPassword``).
    """
    return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def resources(cpu: str, memory: str, gpu: str | None = None) -> dict[str, Any]:
    """Requests equal to limits, as Ray asks: it sizes itself from the limits.

    Args:
        cpu: CPU quantity.
        memory: Memory quantity.
        gpu: ``nvidia.com/gpu`` count, if any.

    Returns:
        A container's ``resources``.
    """
    amounts = {"cpu": cpu, "memory": memory}
    if gpu is not None:
        amounts["nvidia.com/gpu"] = gpu
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container(name: str, variant: str, ports: Ports, res: dict[str, Any]) -> dict[str, Any]:
    """The Ray container of a pod (KubeRay expects it first in the pod's containers).

    Args:
        name: The container's name.
        variant: A key of :data:`VARIANTS`.
        ports: Named container ports, as (name, port) pairs.
        res: Its ``resources``.

    Returns:
        The container spec: the variant's image, Serve's environment and the Secrets.
    """
    env = [{"name": k, "value": v} for k, v in SERVE_ENVIRONMENT.items()]
    env += [{"name": var, **secret_ref(SECRET, key)} for var, key in VARIANTS[variant].secret_env]
    return {
        "name": name,
        "image": image(variant),
        "env": env,
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports],
        "resources": res,
    }


def serve_config(variant: str) -> dict[str, Any]:
    """The Serve config of a variant (its ``serveConfigV2``), parsed."""
    return yaml.safe_load((ROOT / VARIANTS[variant].config).read_text())


def grpc_port(variant: str) -> int | None:
    """The port of Serve's gRPC ingress in the variant's config (``grpc_options.port``).

    Args:
        variant: A key of :data:`VARIANTS`.

    Returns:
        The port, or ``None`` when the config serves no gRPC (no servicer functions).
    """
    options = serve_config(variant).get("grpc_options") or {}
    if not options.get("grpc_servicer_functions"):
        return None
    return int(options.get("port", 9000))  # Serve's default gRPC port


def serve_ports(variant: str) -> Ports:
    """The ports Serve listens on in every pod: HTTP, gRPC (when the config serves it), metrics.

    Args:
        variant: A key of :data:`VARIANTS`.

    Returns:
        Named container ports, as (name, port) pairs.
    """
    port = grpc_port(variant)
    grpc = ((GRPC_PORT_NAME, port),) if port is not None else ()
    return (HTTP_PORT, *grpc, METRICS_PORT)


def serve_service(variant: str) -> dict[str, Any]:
    """``spec.serveService``: the protocol of each port of KubeRay's serve Service.

    KubeRay still names the Service (``<rayservice>-serve-svc``), labels it and sets its
    selector (the serving cluster's pods, without the head: ``excludeHeadPodFromServeSvc``);
    its ports are the head container's serving ports, each taken from here when named alike,
    which is how the gRPC port keeps its ``appProtocol``. KubeRay before 1.6 takes only the
    port named ``serve`` and ignores these: the Service then has no gRPC port.

    Args:
        variant: A key of :data:`VARIANTS`.

    Returns:
        The ``serveService`` of the RayService.
    """
    ports: list[dict[str, Any]] = []
    for name, port in serve_ports(variant):
        if name == GRPC_PORT_NAME:
            ports.append({"name": name, "port": port, "appProtocol": GRPC_APP_PROTOCOL})
        elif name == "serve":
            ports.append({"name": name, "port": port})  # HTTP/1.1 and WebSockets: no appProtocol
    return {"spec": {"ports": ports}}


def readiness_probe(variant: str) -> dict[str, Any]:
    """A worker's readiness: raylet and Serve proxy up (KubeRay's checks), gRPC health SERVING
    and ``/readyz`` passing.

    The gRPC check (``python -m serve_app.server.grpc_probe``) calls
    ``grpc.health.v1.Health/Check`` on the pod's gRPC port and passes only on SERVING (an
    Ingress replica that is not draining answered), so a pod is in the serve Service, whose
    ports include gRPC, only while its HAProxy serves gRPC too.
    ``/readyz`` asks the ASR, LLM and TTS deployments for a tiny answer each (cached 30 s by
    the Ingress), so a pod takes sessions only once the models behind it answer. Both go
    through the node's HAProxy to whichever Ingress replica it picks, so both are app-wide:
    three failures in a row, not one, so that a single slow answer under load does not take
    every pod out of the Service at once.

    Kubernetes' own ``grpc:`` probe action would do the gRPC call without Python, but a probe
    has one action and this one needs all four checks (a second, native readiness probe is
    not possible). Nor does it fit liveness or a startup probe: the answer is app-wide and
    NOT_SERVING while a replica drains, and before the app is deployed (a new cluster loading
    its models) there is no answer at all, so either would restart pods that are healthy,
    cutting their sessions. Liveness stays KubeRay's (raylet health).

    Args:
        variant: A key of :data:`VARIANTS` (its config's route prefix holds ``/readyz``).

    Returns:
        The ``readinessProbe`` of the worker's Ray container.
    """
    prefix = serve_config(variant)["applications"][0].get("route_prefix", "/").rstrip("/")
    checks = [  # (how long it may take, s; the command), run in order, cheapest first
        (2, f"wget -T 2 -q -O- {RAYLET_HEALTH} | grep success"),
        (2, f"wget -T 2 -q -O- {PROXY_HEALTH} | grep success"),
    ]
    port = grpc_port(variant)
    if port is not None:
        probe = f"python -m serve_app.server.grpc_probe --port {port} --timeout {GRPC_HEALTH_TIMEOUT_S}"
        checks.append((PYTHON_START_S + GRPC_HEALTH_TIMEOUT_S, probe))
    checks.append(
        (
            READYZ_TIMEOUT_S,
            f"wget -T {READYZ_TIMEOUT_S} -q -O- http://localhost:8000{prefix}/readyz | grep -q {READY_BODY}",
        )
    )
    return {
        "exec": {"command": ["bash", "-c", " && ".join(command for _, command in checks)]},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": sum(seconds for seconds, _ in checks) + 1,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def pod(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A pod template running as the image's non-root ``ray`` user (uid 1000).

    Args:
        containers: The pod's containers, the Ray container first.
        **extra: More pod spec fields.

    Returns:
        The ``template`` of a group.
    """
    return {"spec": {"securityContext": {"runAsNonRoot": True}, **extra, "containers": containers}}


def head_group(variant: str) -> dict[str, Any]:
    """The head: GCS, dashboard, Serve controller and autoscaler, but no Serve replica.

    Args:
        variant: A key of :data:`VARIANTS`.

    Returns:
        The ``headGroupSpec``.
    """
    return {
        # num-cpus 0: replicas land on workers only, so the head's loss (which GCS fault
        # tolerance survives) takes no session with it.
        "rayStartParams": {"num-cpus": "0", "metrics-export-port": "8080"},
        # The serve Service's ports are the head container's serving ports (KubeRay reads them
        # there), although the head itself takes no traffic.
        "template": pod(
            [container("ray-head", variant, (*HEAD_PORTS, *serve_ports(variant)), resources("2", "8Gi"))]
        ),
    }


def worker_group(variant: str, group: Group) -> dict[str, Any]:
    """One worker group, autoscaled between its bounds.

    Args:
        variant: A key of :data:`VARIANTS`.
        group: The group's shape and bounds.

    Returns:
        An entry of ``workerGroupSpecs``.
    """
    res = resources(group.cpu, group.memory, group.gpu)
    ray = container("ray-worker", variant, serve_ports(variant), res)
    # Liveness stays KubeRay's (raylet health): /healthz, /readyz and gRPC health answer for
    # the whole app, and restarting pods because of an app-wide fault would only make it worse.
    ray["readinessProbe"] = readiness_probe(variant)
    extra: dict[str, Any] = {"terminationGracePeriodSeconds": WORKER_TERMINATION_GRACE_S}
    if group.gpu:
        extra["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "groupName": group.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": {"metrics-export-port": "8080"},
        "template": pod([ray], **extra),
    }


def ray_service(variant: str) -> dict[str, Any]:
    """The RayService of one variant, ``serveConfigV2`` included.

    Args:
        variant: A key of :data:`VARIANTS`.

    Returns:
        The manifest as a mapping, in the order it is written.
    """
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
            # Sessions enter through worker pods only: the head runs no Ingress replica.
            "excludeHeadPodFromServeSvc": True,
            "serveService": serve_service(variant),
            "serveConfigV2": (ROOT / spec.config).read_text(),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # Ray's dashboard (which runs jobs) and GCS ask for a token KubeRay generates.
                "authOptions": {"mode": "token"},
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": 300,
                    "resources": resources("500m", "512Mi"),
                },
                "gcsFaultToleranceOptions": {
                    "redisAddress": REDIS_ADDRESS,
                    "redisPassword": secret_ref(REDIS_SECRET, "password"),
                },
                "headGroupSpec": head_group(variant),
                "workerGroupSpecs": [worker_group(variant, group) for group in spec.workers],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (``serveConfigV2``) as literal blocks, as people write them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render(variant: str) -> str:
    """The text of ``kuberay/ray-service.<variant>.yaml``.

    Args:
        variant: A key of :data:`VARIANTS`.

    Returns:
        A header saying how the file is made, then the manifest as YAML.
    """
    header = (
        f"# GENERATED by kuberay/render.py from {VARIANTS[variant].config} (serveConfigV2) and the\n"
        "# cluster described in render.py. Do not edit: change those, then run\n"
        "#   python kuberay/render.py\n"
        f'# voxray RayService, variant {variant}. README: "Deploy on Kubernetes".\n'
    )
    return header + yaml.dump(ray_service(variant), Dumper=_Dumper, sort_keys=False, width=120)


def manifest_path(variant: str) -> Path:
    """Where the manifest of ``variant`` is committed."""
    return ROOT / "kuberay" / f"ray-service.{variant}.yaml"


def main(argv: list[str] | None = None) -> int:
    """Write the manifests, or with ``--check`` report whether they are current.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 1 when ``--check`` found a stale manifest (its diff printed), else 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed manifest differs")
    args = parser.parse_args(argv)
    stale = 0
    for variant in VARIANTS:
        path, text = manifest_path(variant), render(variant)
        current = path.read_text() if path.is_file() else ""
        if current == text:
            continue
        name = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        if args.check:
            stale += 1
            diff = difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), f"{name} (committed)", f"{name} (rendered)"
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(text)
            print(f"wrote {name}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
