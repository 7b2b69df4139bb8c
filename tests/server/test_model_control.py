"""Model control (issue #13): a repository that changes under a running server (poll), load and
unload on request (explicit), version policies, and no call dropped across reloads."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import numpy_helper

from ganserve.cli import main as cli
from ganserve.latent import latents
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.oip import grpc_service_pb2_grpc as oip_grpc
from ganserve.server.runner import Runner
from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import CGAN, DCGAN, MODELS, RunningServer, images, until

SEED = 5
APPLIED = "applying the repository change"


def variant(source: Path, target: Path, scale: float) -> None:
    """A copy of the DCGAN whose first weights are scaled: the same kind and card, other bytes."""
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.ndim == 4:
            init.CopyFrom(numpy_helper.from_array(array * np.float32(scale), init.name))
            break
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


def expected(path: Path) -> bytes:
    """What a version's file makes of images 0-1 of SEED, straight from ONNX Runtime."""
    z = latents(SEED, 0, 2, 100)
    return np.ascontiguousarray(Runner(path, threads=1).run({"z": z})).tobytes()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """mnist-dcgan version 1 in a repository of its own; versions 2 and 3 made aside."""
    root = tmp_path / "models"
    shutil.copytree(MODELS / DCGAN / "1", root / DCGAN / "1")
    for version, scale in ((2, 1.1), (3, 0.9)):
        target = tmp_path / "aside" / str(version) / "model.onnx"
        variant(MODELS / DCGAN / "1" / "model.onnx", target, scale)
    return root


def add(repo: Path, version: int) -> None:
    aside = repo.parent / "aside" / str(version)
    staging = repo / DCGAN / f".staging-{version}"
    shutil.copytree(aside, staging)
    staging.rename(repo / DCGAN / str(version))  # a version appears whole, as a deploy does


def remove(repo: Path, version: int) -> None:
    shutil.rmtree(repo / DCGAN / str(version))


def sample(server: RunningServer, version: int = 0) -> pb.ImageBatch:
    return server.stub.Sample(pb.SampleRequest(model=DCGAN, count=2, seed=SEED, version=version))


def states(server: RunningServer) -> dict[int, str]:
    info = server.stub.DescribeModel(pb.DescribeModelRequest(model=DCGAN))
    return {v.version: pb.VersionState.State.Name(v.state) for v in info.versions}


def test_poll_loads_new_versions_unloads_removed_ones_and_keeps_serving_past_a_broken_one(
    make_server: Callable, repo: Path
) -> None:
    server = make_server(model_repository=repo, model_control="poll", poll_seconds=0.2)
    v1 = expected(repo / DCGAN / "1" / "model.onnx")
    v2 = expected(repo.parent / "aside" / "2" / "model.onnx")
    assert v1 != v2
    assert images(sample(server)).tobytes() == v1
    add(repo, 2)
    until(lambda: states(server).get(2) == "READY", APPLIED, 60)
    latest = sample(server)
    assert latest.version == 2 and images(latest).tobytes() == v2
    assert images(sample(server, 1)).tobytes() == v1  # older versions still serve by number

    broken = repo / DCGAN / "3"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a model")
    until(lambda: states(server).get(3) == "FAILED", APPLIED, 60)
    assert sample(server).version == 2  # the broken version never became the latest
    health = health_pb2_grpc.HealthStub(server.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=f"model/{DCGAN}"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert server.metric("ganserve_model_state", model=DCGAN, version="3", state="failed") == 1

    shutil.rmtree(broken)
    remove(repo, 2)
    until(lambda: states(server).get(2) == "UNLOADED", APPLIED, 60)
    with pytest.raises(grpc.RpcError) as info:
        sample(server, 2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # asked for by number: removed
    assert images(sample(server)).tobytes() == v1


def test_poll_applies_a_changed_config_and_a_version_policy(
    make_server: Callable, repo: Path
) -> None:
    server = make_server(model_repository=repo, model_control="poll", poll_seconds=0.2)
    add(repo, 2)
    until(lambda: states(server).get(2) == "READY", APPLIED, 60)
    describe = pb.DescribeModelRequest(model=DCGAN)
    assert server.stub.DescribeModel(describe).max_batch_size == 64
    config = {"max_batch_size": 16, "version_policy": {"latest": 1}}
    (repo / DCGAN / "config.json").write_text(json.dumps(config))
    until(lambda: states(server) == {1: "UNLOADED", 2: "READY"}, APPLIED, 60)
    assert server.stub.DescribeModel(describe).max_batch_size == 16
    (repo / DCGAN / "config.json").write_text(json.dumps({"version_policy": {"specific": [1]}}))
    until(lambda: states(server) == {1: "READY", 2: "UNLOADED"}, APPLIED, 60)
    assert sample(server).version == 1


def test_no_call_is_dropped_while_versions_come_and_go(make_server: Callable, repo: Path) -> None:
    """32 clients while versions are added and removed: every call for the latest succeeds with
    the bytes of exactly one version; by number, only a removed version may be UNAVAILABLE."""
    server = make_server(model_repository=repo, model_control="poll", poll_seconds=0.2)
    files = {1: repo / DCGAN / "1" / "model.onnx"}
    files |= {v: repo.parent / "aside" / str(v) / "model.onnx" for v in (2, 3)}
    want = {v: expected(path) for v, path in files.items()}
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    problems: list[str] = []

    def client(number: int) -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = server.stub.__class__(channel)
            while not stop.is_set():
                version = (0, 0, 0, 0, 1, 2)[number % 6]
                request = pb.SampleRequest(model=DCGAN, count=2, seed=SEED, version=version)
                try:
                    reply = stub.Sample(request, timeout=30)
                except grpc.RpcError as exc:
                    code = exc.code()
                    outcomes[f"v{version} {code.name}"] += 1
                    allowed = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
                    if version != 2 or code not in allowed:
                        problems.append(f"version {version}: {code.name} {exc.details()}")
                    continue
                outcomes[f"v{version} OK"] += 1
                if images(reply).tobytes() != want[reply.version]:
                    problems.append(f"version {version}: bytes not those of v{reply.version}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    try:
        for step in range(6):  # add 2, add 3, remove 2, remove 3, add 2, remove 2
            time.sleep(1.0)
            version = (2, 3, 2, 3, 2, 2)[step]
            (add if step in (0, 1, 4) else remove)(repo, version)
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not problems, (problems[:5], outcomes)
    assert outcomes["v0 OK"] > 50 and outcomes["v1 OK"] > 10, outcomes


def test_explicit_control_loads_and_unloads_on_request(make_server: Callable) -> None:
    server = make_server(model_control="explicit", load_models=DCGAN)
    stub = oip_grpc.GRPCInferenceServiceStub(server.channel)
    index = stub.RepositoryIndex(oip.RepositoryIndexRequest())
    assert {m.name for m in index.models} == {DCGAN}  # only what --load-models named
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Generate(pb.GenerateRequest(model=CGAN, count=1, label=1))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert cli(["models", "load", CGAN, "--server", server.address]) == 0
    assert len(images(server.stub.Generate(pb.GenerateRequest(model=CGAN, count=1, label=1))))
    assert cli(["models", "unload", DCGAN, "--server", server.address]) == 0
    with pytest.raises(grpc.RpcError) as info:
        sample(server)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    index = stub.RepositoryIndex(oip.RepositoryIndexRequest(ready=True))
    assert [(m.name, m.state) for m in index.models] == [(CGAN, "READY")]
    assert cli(["models", "load", "no-such-model", "--server", server.address]) == 1
    assert cli(["models", "list", "--server", server.address]) == 0


def test_a_folder_that_is_not_a_version_is_skipped_with_one_warning(
    make_server: Callable, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for odd in ("²", "01", "0", "9" * 5000, "v2"):
        (repo / DCGAN / odd[:200]).mkdir()
    caplog.set_level("WARNING", logger="ganserve.models")
    server = make_server(model_repository=repo, model_control="poll", poll_seconds=0.2)
    assert sample(server).version == 1  # it starts (once: "Event loop is closed")
    add(repo, 2)  # once never picked up: the poller had died on '²'
    until(lambda: states(server).get(2) == "READY", APPLIED, 60)
    assert sample(server).version == 2
    time.sleep(0.5)  # a few more rescans: still one warning per folder
    skipped = [r.getMessage() for r in caplog.records if "not a version" in r.getMessage()]
    assert len(skipped) == 5 and any("'²'" in m for m in skipped), skipped


def test_an_odd_folder_does_not_stop_loading_another_model_on_request(
    make_server: Callable, repo: Path
) -> None:
    shutil.copytree(MODELS / CGAN / "1", repo / CGAN / "1")
    (repo / DCGAN / "²").mkdir()
    server = make_server(model_repository=repo, model_control="explicit", load_models=DCGAN)
    stub = oip_grpc.GRPCInferenceServiceStub(server.channel)
    stub.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=CGAN))  # once INTERNAL
    assert len(images(server.stub.Generate(pb.GenerateRequest(model=CGAN, count=1, label=1))))


def test_a_version_of_another_kind_is_refused_unless_the_config_allows_it(
    make_server: Callable, repo: Path
) -> None:
    server = make_server(model_repository=repo, model_control="poll", poll_seconds=0.2)
    add(repo, 2)
    until(lambda: states(server).get(2) == "READY", APPLIED, 60)
    v2 = images(sample(server)).tobytes()
    cgan = MODELS / CGAN / "1" / "model.onnx"
    # a swapped file: version 2 keeps serving the load that worked
    staged = repo / DCGAN / "2" / ".model.onnx"
    shutil.copy(cgan, staged)
    staged.replace(repo / DCGAN / "2" / "model.onnx")
    refused = {"model": DCGAN, "reason": "signature"}
    until(lambda: server.metric("ganserve_model_load_failures_total", **refused) == 1, APPLIED, 60)
    info = server.stub.DescribeModel(pb.DescribeModelRequest(model=DCGAN))
    (state,) = [v for v in info.versions if v.version == 2]
    assert state.state == pb.VersionState.READY and "kind: unconditional -> conditional" in (
        state.error
    )
    assert info.kind == "unconditional" and images(sample(server)).tobytes() == v2
    # a new version of another kind: FAILED, never the latest
    (repo / DCGAN / "3").mkdir()
    shutil.copy(cgan, repo / DCGAN / "3" / "model.onnx")
    until(lambda: states(server).get(3) == "FAILED", APPLIED, 60)
    assert server.metric("ganserve_model_load_failures_total", **refused) == 2
    assert server.metric("ganserve_model_state", model=DCGAN, version="3", state="failed") == 1
    assert sample(server).version == 2
    # the operator says so: it serves
    (repo / DCGAN / "config.json").write_text(json.dumps({"allow_signature_change": True}))
    until(lambda: states(server).get(3) == "READY", APPLIED, 60)
    reply = server.stub.Generate(pb.GenerateRequest(model=DCGAN, count=2, label=1))
    assert reply.version == 3
