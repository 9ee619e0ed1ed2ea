"""What the files in kuberay/ say: the Serve configs they carry parse and import, sessions
drain before anything is deleted, the clusters can hold what Serve may ask for, Secrets and
Redis line up, and the Dockerfile (never built here) pins and bakes what the manifests expect.

That the API server and the KubeRay operator would accept them is in test_kuberay.py.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import shlex
from typing import Any

import pytest
import yaml

from serve_app.app import load_config
from serve_app.protocols.grpc_api import SERVICER_FUNCTIONS
from serve_app.server import grpc_probe
from serve_app.server.serve_env import SERVE_ENVIRONMENT, SESSION_DRAIN_S
from tests.unit.kuberay_manifests import (
    KUBERAY,
    ROOT,
    VARIANTS,
    app_deployment,
    cluster,
    documents,
    groups,
    ray_containers,
    render,
    serve_config,
    service,
)


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_parses_with_ray_and_voxray(variant: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = serve_config(variant)
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.host == "0.0.0.0"  # reachable through the pod's Service
    for app in config["applications"]:
        load_config(app["args"])
        module, _, attribute = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))


# --- sessions drain before anything is deleted ---------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_sessions_drain_before_anything_is_deleted(variant: str) -> None:
    spec = service(variant)["spec"]
    ingress = app_deployment(variant, "Ingress")
    assert ingress["graceful_shutdown_timeout_s"] == SESSION_DRAIN_S
    assert ingress["graceful_shutdown_wait_loop_s"] == 2
    # A rayClusterConfig change: the old cluster outlives its Ingress replicas' drain.
    assert spec["rayClusterDeletionDelaySeconds"] >= ingress["graceful_shutdown_timeout_s"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    for container in ray_containers(variant):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in SERVE_ENVIRONMENT} == SERVE_ENVIRONMENT  # as scripts/run.sh
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
        # HAProxy must not hard-stop the process holding old connections before they drain.
        assert int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) > ingress["graceful_shutdown_timeout_s"]
    for group in cluster(variant)["workerGroupSpecs"]:
        assert 30 <= group["template"]["spec"]["terminationGracePeriodSeconds"] <= 600


# --- cluster shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_cluster_shape_and_ports(variant: str) -> None:
    ray_cluster = cluster(variant)
    assert ray_cluster["rayVersion"] == render.RAY_VERSION
    assert ray_cluster["enableInTreeAutoscaling"] is True
    assert ray_cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replica on the head
    assert ray_cluster["authOptions"] == {"mode": "token"}
    assert service(variant)["spec"]["excludeHeadPodFromServeSvc"] is True
    for group in ray_cluster["workerGroupSpecs"]:
        assert 0 < group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in groups(variant):
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
        assert group["template"]["spec"]["securityContext"] == {"runAsNonRoot": True}
    head, *workers = ray_containers(variant)
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports == {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "serve": 8000,
        "serve-grpc": 50051,
        "metrics": 8080,
    }
    for container in [head, *workers]:
        assert {"serve": 8000, "serve-grpc": 50051, "metrics": 8080}.items() <= {
            p["name"]: p["containerPort"] for p in container["ports"]
        }.items()
        assert container["resources"]["requests"] == container["resources"]["limits"]  # as Ray asks
        assert container["image"] == render.image(variant)
        assert re.fullmatch(
            rf"[^:]+:{render.VOXRAY_VERSION}-ray{render.RAY_VERSION}-{variant}", container["image"]
        )


def quantity(value: str) -> float:
    """A CPU or GPU quantity (``"8"``, ``"500m"``) as a number."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def replicas_at_most(variant: str) -> list[tuple[str, int, dict[str, float]]]:
    """Every Serve deployment of the variant: its max replicas and one replica's resources.

    A vLLM engine (``llm_engines``) needs its placement group's bundles plus, as
    configs/gpu.yaml says, one CPU for the replica actor itself."""
    [app] = serve_config(variant)["applications"]
    found = []
    for d in app["deployments"]:
        options = d["ray_actor_options"]
        count = d.get("autoscaling_config", {}).get("max_replicas", d.get("num_replicas", 1))
        found.append((d["name"], count, {"CPU": options["num_cpus"], "GPU": options.get("num_gpus", 0)}))
    for engine in app["args"].get("llm_engines", []):
        bundles = engine["placement_group_config"]["bundles"]
        need = {
            "CPU": 1 + sum(b.get("CPU", 0) for b in bundles),
            "GPU": sum(b.get("GPU", 0) for b in bundles),
        }
        count = engine["deployment_config"]["autoscaling_config"]["max_replicas"]
        found.append((engine["model_loading_config"]["model_id"], count, need))
    return found


def pod_capacity(group: dict[str, Any]) -> dict[str, float]:
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return {"CPU": quantity(limits["cpu"]), "GPU": quantity(limits.get("nvidia.com/gpu", "0"))}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_serve_service_carries_the_configs_http_and_grpc_ports(variant: str) -> None:
    """The gRPC port comes from the config's grpc_options, on every pod and in the serve Service."""
    config = serve_config(variant)
    grpc = config["grpc_options"]
    assert list(grpc["grpc_servicer_functions"]) == list(SERVICER_FUNCTIONS)  # health included
    assert any(f.endswith(".health_pb2_grpc.add_HealthServicer_to_server") for f in SERVICER_FUNCTIONS)
    for container in ray_containers(variant):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == config["http_options"]["port"]
        assert ports["serve-grpc"] == grpc["port"]
    service_ports = service(variant)["spec"]["serveService"]["spec"]["ports"]
    assert service_ports == [
        {"name": "serve", "port": config["http_options"]["port"]},
        # An L7 load balancer speaks HTTP/2 without TLS to this port (HAProxy's gRPC frontend).
        {"name": "serve-grpc", "port": grpc["port"], "appProtocol": "kubernetes.io/h2c"},
    ]


def test_render_reads_the_grpc_port_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another port in the config moves every place the manifest names it; none, and it goes."""
    config = render.serve_config("cpu")
    config["grpc_options"]["port"] = 50052
    monkeypatch.setattr(render, "serve_config", lambda variant: config)
    manifest = render.ray_service("cpu")
    [worker] = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    ray = worker["template"]["spec"]["containers"][0]
    assert {"name": "serve-grpc", "containerPort": 50052} in ray["ports"]
    assert manifest["spec"]["serveService"]["spec"]["ports"][1]["port"] == 50052
    assert "grpc_probe --port 50052 " in ray["readinessProbe"]["exec"]["command"][2]
    del config["grpc_options"]
    manifest = render.ray_service("cpu")
    [worker] = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    ray = worker["template"]["spec"]["containers"][0]
    assert [p["name"] for p in ray["ports"]] == ["serve", "metrics"]
    assert manifest["spec"]["serveService"]["spec"]["ports"] == [{"name": "serve", "port": 8000}]
    assert "grpc_probe" not in ray["readinessProbe"]["exec"]["command"][2]


@pytest.mark.parametrize("variant", VARIANTS)
def test_workers_are_ready_only_when_grpc_and_the_models_answer(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readiness keeps KubeRay's raylet and proxy checks and adds gRPC health and /readyz;
    liveness is KubeRay's."""
    head, *workers = ray_containers(variant)
    prefix = serve_config(variant)["applications"][0]["route_prefix"].rstrip("/")
    assert "readinessProbe" not in head and "livenessProbe" not in head  # KubeRay's own
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(grpc_probe, "check", lambda *a: calls.append(a) or "NOT_SERVING")
    for container in workers:
        assert "livenessProbe" not in container and "startupProbe" not in container
        probe = container["readinessProbe"]
        shell, flag, script = probe["exec"]["command"]
        assert (shell, flag) == ("bash", "-c")
        checks = script.split(" && ")
        assert len(checks) == 4
        assert checks[0].startswith("wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz")
        assert checks[1].startswith("wget -T 2 -q -O- http://localhost:8000/-/healthz")
        # grpc.health.v1.Health/Check on the pod's gRPC port, SERVING or the check fails.
        python, dash_m, module, *args = shlex.split(checks[2])
        assert (python, dash_m, module) == ("python", "-m", "serve_app.server.grpc_probe")
        calls.clear()
        assert grpc_probe.main(args) == 1  # the arguments parse, and only SERVING passes
        assert calls == [(f"localhost:{serve_config(variant)['grpc_options']['port']}", "", 3.0)]
        assert f"http://localhost:8000{prefix}/readyz " in checks[3]
        assert """grep -q '"status":"ready"'""" in checks[3]
        # The probe outlasts its checks one after the other: 2 + 2 + (Python's start and the
        # gRPC deadline) + the Ingress's own wait for the models (20 s each, concurrently).
        assert render.READYZ_TIMEOUT_S > 20
        assert probe["timeoutSeconds"] > 2 + 2 + 2 + 3 + render.READYZ_TIMEOUT_S
        assert probe["failureThreshold"] >= 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_worker_groups_hold_every_deployment_at_its_max(variant: str) -> None:
    workers = cluster(variant)["workerGroupSpecs"]
    demands = replicas_at_most(variant)
    for name, _, need in demands:  # each replica fits on one pod
        assert any(all(pod_capacity(g)[r] >= need[r] for r in need) for g in workers), name
    total_cpu = sum(count * need["CPU"] for _, count, need in demands)
    assert total_cpu <= sum(g["maxReplicas"] * pod_capacity(g)["CPU"] for g in workers)
    # GPU shares pack onto whole GPUs (first fit, largest first), within the groups' maximum.
    gpus: list[float] = []
    for share in sorted((need["GPU"] for _, count, need in demands for _ in range(count)), reverse=True):
        if share:
            free = next((i for i, used in enumerate(gpus) if used + share <= 1), None)
            gpus.append(share) if free is None else gpus.__setitem__(free, gpus[free] + share)
    assert len(gpus) <= sum(g["maxReplicas"] * pod_capacity(g)["GPU"] for g in workers)


def test_cpu_replicas_reserve_the_cores_their_engines_use() -> None:
    [app] = serve_config("cpu")["applications"]
    asr, llm = app["args"]["asr"]["options"], app["args"]["llm"]["options"]
    assert app_deployment("cpu", "ASR")["ray_actor_options"]["num_cpus"] == asr["cpu_threads"]
    assert app_deployment("cpu", "LLM")["ray_actor_options"]["num_cpus"] == llm["n_threads"]
    for deployment in app["deployments"]:
        scaling = deployment["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] < scaling["max_replicas"], deployment["name"]


def test_gpu_variant_has_a_gpu_group_that_fits_the_gpu_deployments() -> None:
    workers = {g["groupName"]: g for g in cluster("gpu")["workerGroupSpecs"]}
    limits = workers["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    tolerations = workers["gpu"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    shares = [need["GPU"] for _, _, need in replicas_at_most("gpu") if need["GPU"]]
    assert len(shares) == 4 and sum(shares) <= 1  # ASR, TTS, Speaker and vLLM: one of each shares a GPU
    assert "nvidia.com/gpu" not in workers["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


# --- Secrets and Redis -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_referenced_exist_in_the_example_with_their_keys(variant: str) -> None:
    secrets = {d["metadata"]["name"]: d["stringData"] for d in documents(KUBERAY / "secrets.example.yaml")}
    ft = cluster(variant)["gcsFaultToleranceOptions"]
    refs = [ft["redisPassword"]["valueFrom"]["secretKeyRef"]]
    for container in ray_containers(variant):
        env = {e["name"]: e for e in container["env"]}
        # The keys clients present (serve_app/access.py reads VOXRAY_API_KEYS, comma-separated).
        assert env["VOXRAY_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
            "name": "voxray-secrets",
            "key": "api-keys",
        }
        if variant == "gpu":
            assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "hf-token"
        refs += [e["valueFrom"]["secretKeyRef"] for e in env.values() if "valueFrom" in e]
    for ref in refs:
        assert ref["key"] in secrets[ref["name"]], ref


def test_redis_is_pinned_persistent_and_password_protected() -> None:
    claim, deployment, redis_service = documents(KUBERAY / "redis.yaml")
    [redis] = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-\w+)?", redis["image"])
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and '--requirepass "$REDIS_PASSWORD"' in command
    [password] = redis["env"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": render.REDIS_SECRET, "key": "password"}
    [volume] = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert (
        "--dir /data" in command and {"name": volume["name"], "mountPath": "/data"} in redis["volumeMounts"]
    )
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer of the AOF
    [port] = redis_service["spec"]["ports"]
    assert f"{redis_service['metadata']['name']}:{port['port']}" == render.REDIS_ADDRESS
    for variant in VARIANTS:
        assert cluster(variant)["gcsFaultToleranceOptions"]["redisAddress"] == render.REDIS_ADDRESS


def test_every_image_is_pinned() -> None:
    images = [
        c["image"]
        for path in KUBERAY.glob("*.yaml")
        for text in [path.read_text()]
        for c in re.finditer(r"^\s*(?:- )?image: (?P<image>\S+)$", text, re.MULTILINE)
    ]
    assert len(images) >= 3
    for image in images:
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image


# --- the Dockerfile (no Docker engine here: checked as text) -----------------------------------


def dockerfile_stages() -> dict[str, str]:
    """Each ``FROM ... AS <name>`` stage's text, by name."""
    text = (KUBERAY / "Dockerfile").read_text()
    parts = re.split(r"^FROM (\S+) AS (\w+)$", text, flags=re.MULTILINE)
    return {
        name: f"FROM {base}\n{body}"
        for base, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True)
    }


def test_dockerfile_pins_what_the_manifests_and_pyproject_pin() -> None:
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[serve]=={render.RAY_VERSION}"' in pyproject
    assert f"ARG RAY_VERSION={render.RAY_VERSION}\n" in dockerfile
    stages = dockerfile_stages()
    assert sorted(stages) == sorted([*VARIANTS, "source"])
    assert stages["cpu"].startswith("FROM rayproject/ray:${RAY_VERSION}-py311-cpu\n")
    assert stages["gpu"].startswith("FROM rayproject/ray-llm:${RAY_VERSION}-py311-cu128\n")
    for variant in VARIANTS:  # the documented build command tags what the manifest runs
        assert (
            f"docker build -f kuberay/Dockerfile --target {variant} -t {render.image(variant)} ."
            in dockerfile
        )


def test_dockerfile_copies_paths_that_exist_and_are_in_the_build_context() -> None:
    ignored = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert {".git", ".venv*", "bench/results"} <= set(ignored)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (KUBERAY / "Dockerfile").read_text(), re.MULTILINE)
    sources = [path for line in copied for path in line.split()]
    assert "serve_app/" in sources and "pyproject.toml" in sources
    for path in sources:
        assert (ROOT / path).exists(), path
        prefixes = [path.rstrip("/")] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in ignored), path


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_image_bakes_the_bundled_models_its_config_uses(variant: str) -> None:
    stage = dockerfile_stages()[variant]
    assert "ENV VOXRAY_CACHE_DIR=/opt/voxray/models\n" in stage
    assert stage.index("ENV VOXRAY_CACHE_DIR=") < stage.index("RUN voxray models prepare")
    [names] = re.findall(r"^RUN voxray models prepare([\w. -]*?)(?: &&.*)?$", stage, re.MULTILINE)
    prepared = set(names.split())  # none named: all of them
    used = set(re.findall(r"bundled:([\w.-]+)", yaml.safe_dump(serve_config(variant))))
    assert used and (not prepared or used <= prepared), used - prepared
    if variant == "cpu":
        assert not prepared
    assert re.search(r'pip install --no-cache-dir "\.\[' + variant + r'\]"', stage)  # not editable
    # The pods' runAsNonRoot needs a numeric, non-root user in the image.
    [*_, user] = re.findall(r"^USER (\S+)$", stage, re.MULTILINE) or ["(none)"]
    assert user.isdigit() and int(user) != 0
