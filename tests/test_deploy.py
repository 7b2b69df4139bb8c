"""deploy/k8s: rendered with `kubectl kustomize` and every object checked field by field
against the Kubernetes API types (the official client's models): an unknown or mistyped field
fails. Plus what must agree between the objects and with the server's own flags."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml

from ganserve.server.config import parse

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"
MODELS = {  # (apiVersion, kind) -> the client's model class
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
}
# The Prometheus Operator's CRD is not in the client: the fields ganserve uses, by hand.
SERVICE_MONITOR = {"selector": {"matchLabels": dict}, "endpoints": [{"port", "path", "interval"}]}


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / "k8s" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(yaml.safe_load_all(done.stdout))


def strict(value: Any, kind: str, path: str) -> None:
    """`value` (parsed YAML) is a valid `kind` (an openapi type name of the client)."""
    if kind == "object":  # IntOrString and free-form fields
        return
    if kind in ("str", "int", "bool", "float"):
        ok = {"str": str, "int": int, "bool": bool, "float": (int, float)}[kind]
        assert isinstance(value, ok) and (kind == "bool" or not isinstance(value, bool)), (
            f"{path}: {value!r} is not {kind}"
        )
        return
    if m := re.fullmatch(r"[Ll]ist\[(.+)\]", kind):
        assert isinstance(value, list), f"{path}: not a list"
        for i, item in enumerate(value):
            strict(item, m.group(1), f"{path}[{i}]")
        return
    if m := re.fullmatch(r"[Dd]ict[\[(]str, (.+)[\])]", kind):
        assert isinstance(value, dict), f"{path}: not a map"
        for key, item in value.items():
            strict(item, m.group(1), f"{path}.{key}")
        return
    model = getattr(k8s, kind)
    assert isinstance(value, dict), f"{path}: not an object ({kind})"
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, item in value.items():
        assert key in by_json, f"{path}: unknown field {key!r} in {kind}"
        strict(item, model.openapi_types[by_json[key]], f"{path}.{key}")


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_every_rendered_object_is_a_valid_kubernetes_object(overlay: str) -> None:
    objects = render(overlay)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["Deployment", "Service", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
         "ServiceMonitor"]
    )  # fmt: skip
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ServiceMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(obj["spec"]) == set(SERVICE_MONITOR), name
            for endpoint in obj["spec"]["endpoints"]:
                assert set(endpoint) <= SERVICE_MONITOR["endpoints"][0], name
            continue
        strict(obj, MODELS[(obj["apiVersion"], obj["kind"])], name)


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_the_objects_agree_with_each_other_and_with_the_server(overlay: str) -> None:
    found = _by_kind(render(overlay))
    (deployment,) = found["Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    config = parse(container["args"])  # flags the server takes
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": config.port, "metrics": config.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == config.port  # grpc.health.v1
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.grace_seconds + pause
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    labels = pod["metadata"]["labels"]
    for service in found["Service"]:
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert [s["spec"].get("clusterIP") for s in found["Service"]].count("None") == 1
    (monitor,) = found["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (hpa,) = found["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "ganserve_queue_depth"
    env = {e["name"]: e["value"] for e in container["env"]}
    gpu = overlay.endswith("gpu")
    assert env["GANSERVE_DEVICE"] == ("cuda" if gpu else "cpu")
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == gpu


def test_a_mistyped_field_is_caught() -> None:
    """The check itself: a typo and a wrong type in a real manifest both fail."""
    (deployment,) = _by_kind(render("base"))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(AssertionError, match="unknown field 'imagePullPolicyy'"):
        strict(deployment, "V1Deployment", "Deployment")
    del deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"]
    deployment["spec"]["replicas"] = "2"
    with pytest.raises(AssertionError, match="is not int"):
        strict(deployment, "V1Deployment", "Deployment")


def test_the_bulk_job_is_an_indexed_job_with_one_worker_per_index() -> None:
    job = yaml.safe_load((ROOT / "deploy" / "k8s" / "bulk-job.yaml").read_text())
    strict(job, "V1Job", "Job/ganserve-digits")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"  # JOB_COMPLETION_INDEX -> --worker-index
    (container,) = spec["template"]["spec"]["containers"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"][1:])
    assert container["args"][0] == "generate"
    assert int(flags["workers"]) == spec["completions"]
    assert flags["version"] != "0"  # pinned: every worker makes the same job
    assert flags["out"].startswith("s3://")  # a bucket prefix: no shared volume
    env = {e["name"]: e for e in container["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert "value" not in env[name], name  # from the Secret, never written here
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
