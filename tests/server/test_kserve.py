"""deploy/kserve/inferenceservice.yaml: what KServe reads from it, and flags the server takes."""

from pathlib import Path

import yaml

from ganserve.server.config import parse

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kserve" / "inferenceservice.yaml"


def test_the_inference_service_declares_the_grpc_port_the_server_listens_on() -> None:
    service = yaml.safe_load(MANIFEST.read_text())
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe gives the predictor
    (port,) = container["ports"]
    assert port["name"] == "h2c" and port["protocol"] == "TCP"  # h2c: KServe routes gRPC here
    config = parse(container["args"])  # every flag is one the server takes
    assert config.port == port["containerPort"] == container["readinessProbe"]["grpc"]["port"]
    assert config.host == "0.0.0.0"
    assert container["livenessProbe"]["grpc"]["port"] == config.port
    annotations = service["metadata"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == config.metrics_port
