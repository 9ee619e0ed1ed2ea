"""The Kubernetes manifests in kuberay/: current, valid for the API server, and what they say.

Nothing here needs a cluster: RayServices are checked against the RayService CRD's own
OpenAPI schema (``../shared/reference/kuberay-crd``, KubeRay master of August 2026) made
strict the way the API server's strict field validation is; core resources and pod
templates against Kubernetes' published schemas (``kubernetes-validate``, strict); each
``serveConfigV2`` against Ray's ``ServeDeploySchema`` and voxray's ``AppConfig``.
"""

from __future__ import annotations

import copy
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from serve_app.app import load_config
from serve_app.serve_env import SERVE_ENVIRONMENT, SESSION_DRAIN_S

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
CRD = ROOT.parent / "shared" / "reference" / "kuberay-crd" / "ray.io_rayservices.yaml"
# The oldest Kubernetes release still supported upstream when these manifests were written
# (1.33, until mid 2026 plus managed providers' extended support): fields newer than that
# would fail on many clusters.
K8S_VERSION = "1.33.0"

sys.path.insert(0, str(KUBERAY))
render = importlib.import_module("render")

VARIANTS = sorted(render.VARIANTS)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def service(variant: str) -> dict[str, Any]:
    [doc] = documents(render.manifest_path(variant))
    return doc


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI schema as JSON Schema that rejects unknown fields, as the API server's
    strict field validation does (``kubectl apply --validate=strict``, the default)."""
    schema = dict(schema)
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not preserve:
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    return schema


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))


def crd_errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_manifests_are_rendered_from_the_current_configs() -> None:
    assert render.main(["--check"]) == 0, "run `python kuberay/render.py` and commit the result"
    for variant in VARIANTS:
        config = ROOT / render.VARIANTS[variant]["config"]
        assert service(variant)["spec"]["serveConfigV2"] == config.read_text()


@pytest.mark.parametrize("variant", VARIANTS)
def test_ray_services_match_the_crd_schema(variant: str, crd_validator: jsonschema.Draft7Validator) -> None:
    doc = service(variant)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    assert crd_errors(crd_validator, doc) == []


def test_the_schema_check_rejects_misspelled_fields_and_wrong_types(
    crd_validator: jsonschema.Draft7Validator,
) -> None:
    misspelled = copy.deepcopy(service("cpu"))
    misspelled["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    assert any("enableInTreeAutoscalling" in e for e in crd_errors(crd_validator, misspelled))
    wrong_type = copy.deepcopy(service("cpu"))
    wrong_type["spec"]["rayClusterDeletionDelaySeconds"] = "an hour"
    assert crd_errors(crd_validator, wrong_type)
    deep = copy.deepcopy(service("cpu"))
    deep["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "imagePullPolicyy"
    ] = "x"
    assert crd_errors(crd_validator, deep)


def core_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every core resource shipped, and each RayService pod template as a PodTemplate."""
    docs = [(f"{p.name}#{i}", d) for p in sorted(KUBERAY.glob("*.yaml")) for i, d in enumerate(documents(p))]
    core = [(name, d) for name, d in docs if d["apiVersion"] != "ray.io/v1"]
    for variant in VARIANTS:
        cluster = service(variant)["spec"]["rayClusterConfig"]
        groups = [("head", cluster["headGroupSpec"])] + [
            (g["groupName"], g) for g in cluster["workerGroupSpecs"]
        ]
        for group, spec in groups:
            template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}}
            core.append((f"{variant}/{group}", {**template, "template": spec["template"]}))
    return core


@pytest.mark.parametrize(("name", "doc"), core_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_core_resources_match_the_kubernetes_schemas(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_schema_check_rejects_unknown_fields() -> None:
    [_, deployment, _] = documents(KUBERAY / "redis.yaml")
    deployment = copy.deepcopy(deployment)
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_parses_with_ray_and_voxray(variant: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(service(variant)["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.host == "0.0.0.0"  # reachable through the pod's Service
    for app in config["applications"]:
        load_config(app["args"])
        module, _, attribute = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))


def containers(variant: str) -> list[dict[str, Any]]:
    cluster = service(variant)["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"]["containers"][0] for g in groups]


@pytest.mark.parametrize("variant", VARIANTS)
def test_sessions_drain_before_anything_is_deleted(variant: str) -> None:
    spec = service(variant)["spec"]
    config = yaml.safe_load(spec["serveConfigV2"])
    [ingress] = [d for d in config["applications"][0]["deployments"] if d["name"] == "Ingress"]
    assert ingress["graceful_shutdown_timeout_s"] == SESSION_DRAIN_S
    assert spec["rayClusterDeletionDelaySeconds"] >= ingress["graceful_shutdown_timeout_s"]
    assert spec["upgradeStrategy"]["type"] == "NewCluster"
    for container in containers(variant):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in SERVE_ENVIRONMENT} == SERVE_ENVIRONMENT  # as scripts/run.sh
        # HAProxy must not hard-stop the process holding old connections before they drain.
        assert int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) > ingress["graceful_shutdown_timeout_s"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cluster_shape_ports_secrets_and_fault_tolerance(variant: str) -> None:
    cluster = service(variant)["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == render.RAY_VERSION
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in cluster["workerGroupSpecs"]:  # the operator refuses min > max
        assert 0 < group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    head, *workers = containers(variant)
    assert {p["name"]: p["containerPort"] for p in head["ports"]} == {
        "gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000, "metrics": 8080,
    }  # fmt: skip
    for container in [head, *workers]:
        assert {"serve": 8000, "metrics": 8080}.items() <= {
            p["name"]: p["containerPort"] for p in container["ports"]
        }.items()
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert re.fullmatch(
            rf".+:{render.VOXRAY_VERSION}-ray{render.RAY_VERSION}-{variant}", container["image"]
        )
    secrets = {d["metadata"]["name"]: d["stringData"] for d in documents(KUBERAY / "secrets.example.yaml")}
    refs = [e["valueFrom"]["secretKeyRef"] for c in [head, *workers] for e in c["env"] if "valueFrom" in e]
    refs.append(cluster["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"])
    assert refs and all(r["key"] in secrets[r["name"]] for r in refs)
    redis_service = next(d for d in documents(KUBERAY / "redis.yaml") if d["kind"] == "Service")
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"] == f"{redis_service['metadata']['name']}:6379"


def test_gpu_variant_has_a_gpu_group_that_fits_the_gpu_deployments() -> None:
    cluster = service("gpu")["spec"]["rayClusterConfig"]
    [gpu_group] = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    config = yaml.safe_load(service("gpu")["spec"]["serveConfigV2"])
    app = config["applications"][0]
    shares = [d.get("ray_actor_options", {}).get("num_gpus", 0) for d in app["deployments"]]
    engine = sum(
        b.get("GPU", 0) for e in app["args"]["llm_engines"] for b in e["placement_group_config"]["bundles"]
    )
    assert 0 < sum(shares) + engine <= int(limits["nvidia.com/gpu"])
    cpu_only = [
        c
        for g in cluster["workerGroupSpecs"]
        if g["groupName"] != "gpu"
        for c in g["template"]["spec"]["containers"]
    ]
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in cpu_only)


def test_dockerfile_pins_what_the_manifests_and_pyproject_pin() -> None:
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[serve]=={render.RAY_VERSION}"' in pyproject
    assert f"ARG RAY_VERSION={render.RAY_VERSION}" in dockerfile
    targets = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.MULTILINE)
    assert sorted(targets) == sorted([*VARIANTS, "source"])
    for variant in VARIANTS:
        assert f"--target {variant} -t {render.image(variant)} ." in dockerfile
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE)
    assert copied
    for source in copied:
        for path in source.split():
            assert (ROOT / path).exists(), path
    cpu_stage = dockerfile.split(" AS cpu")[1].split(" AS gpu")[0]
    assert "ENV VOXRAY_CACHE_DIR=" in cpu_stage and "RUN voxray models prepare\n" in cpu_stage


def create_time_cel_rules(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    """The CRD's ``x-kubernetes-validations`` rules that apply on create (no ``oldSelf``)."""
    rules = [
        (path, r["rule"]) for r in schema.get("x-kubernetes-validations") or [] if "oldSelf" not in r["rule"]
    ]
    for name, child in (schema.get("properties") or {}).items():
        rules += create_time_cel_rules(child, (*path, name))
    return rules


def test_no_create_time_cel_rule_of_the_crd_applies_unchecked() -> None:
    # The schema check above does not evaluate CEL. The CRD's create-time rules are few;
    # none may concern a field the manifests set, or this test must learn to evaluate it.
    crd = yaml.safe_load(CRD.read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    rules = create_time_cel_rules(v1["schema"]["openAPIV3Schema"])
    assert rules  # the walk finds them (spec.managedBy, rayClusterConfig.managedBy)
    for variant in VARIANTS:
        for path, rule in rules:
            node: Any = service(variant)
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            assert node is None, f"{variant}: {'.'.join(path)} is set and has a CEL rule: {rule}"
