"""Determinism, batching, back-pressure, cancellation, draining, broken models, metrics."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import CGAN, DCGAN, MODELS, PIX2PIX, RunningServer, ServerProcess, images


def sample(server: RunningServer, count: int, start: int, seed: int = 5) -> np.ndarray:
    reply = server.stub.Sample(
        pb.SampleRequest(model=DCGAN, count=count, seed=seed, start_index=start)
    )
    return images(reply)


def test_images_do_not_depend_on_how_they_were_asked_for(make_server: Callable) -> None:
    server = make_server(max_queue_delay_ms=20.0, max_batch_size=16)
    whole = sample(server, 100, 0)
    tens = np.concatenate([sample(server, 10, i) for i in range(0, 100, 10)])
    assert whole.tobytes() == tens.tobytes()

    def noise(i: int) -> None:  # other clients' calls, coalesced with ours
        sample(server, 3, 1000 + i, seed=99)

    with ThreadPoolExecutor(8) as pool:
        others = [pool.submit(noise, i) for i in range(40)]
        ones = list(pool.map(lambda i: sample(server, 1, i), range(100)))
        for f in others:
            f.result()
    assert np.concatenate(ones).tobytes() == whole.tobytes()
    assert server.metric("ganserve_batch_size_count", model=f"{DCGAN}:1") > 0


def test_concurrent_calls_coalesce_into_batches(make_server: Callable) -> None:
    # runs always on the instance's thread (no inline runs, no solo session), so the one
    # instance is busy while the other calls arrive and their batch waits to fill
    server = make_server(
        max_queue_delay_ms=200.0,
        max_batch_size=64,
        instances=1,
        inline_run_us=0.0,
        solo_session=False,
    )
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: sample(server, 1, i), range(32)))
    runs = server.metric("ganserve_batch_size_count", model=f"{DCGAN}:1")
    total = server.metric("ganserve_batch_size_sum", model=f"{DCGAN}:1")
    assert total == 32  # warm-up runs bypass the batcher
    assert runs < 16, f"32 single-image calls ran in {runs} batches"


def test_a_lone_call_does_not_wait_for_the_queue_delay(make_server: Callable) -> None:
    server = make_server(max_queue_delay_ms=5000.0, instances=1)
    sample(server, 1, 0)  # the channel connected
    started = time.perf_counter()
    assert sample(server, 2, 0).shape == (2, 32, 32, 1)
    assert time.perf_counter() - started < 2.5, "an idle instance waited for the queue delay"
    assert server.metric("ganserve_queue_wait_seconds_sum", model=f"{DCGAN}:1") < 2.5


def test_a_bad_call_does_not_harm_a_concurrent_good_one(make_server: Callable) -> None:
    server = make_server(max_queue_delay_ms=100.0)
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(sample, server, 4, 0)
        bad = pool.submit(server.stub.Sample, pb.SampleRequest(model=DCGAN, count=-0))
        assert good.result().shape == (4, 32, 32, 1)
        with pytest.raises(grpc.RpcError) as info:
            bad.result()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_full_queue_answers_resource_exhausted(make_server: Callable) -> None:
    # (the queue's arithmetic under load is in test_batcher.py)
    server = make_server(max_queue_size=8, max_batch_size=64)
    with pytest.raises(grpc.RpcError) as info:
        sample(server, 9, 0)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "room for 8" in str(info.value.details())
    assert sample(server, 8, 0).shape == (8, 32, 32, 1)
    assert (
        server.metric(
            "ganserve_requests_total", model=DCGAN, method="Sample", code="RESOURCE_EXHAUSTED"
        )
        == 1
    )


def test_an_expired_call_never_runs(make_server: Callable) -> None:
    server = make_server(max_batch_size=64, instances=1)
    sample(server, 1, 0)  # connected and warm: one batch of 1
    with ThreadPoolExecutor(1) as pool:  # 63 batches keep the only instance busy
        busy = pool.submit(sample, server, 4000, 0)
        deadline = time.monotonic() + 10
        while server.metric("ganserve_queue_depth", model=f"{DCGAN}:1") < 1000:
            assert time.monotonic() < deadline, "the long call never reached the queue"
            time.sleep(0.005)
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Sample(pb.SampleRequest(model=DCGAN, count=2, seed=1), timeout=0.05)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert busy.result(60).shape == (4000, 32, 32, 1)
    # the expired call's 2 images never ran: 1 + 4000 images in 1 + 63 batches
    assert server.metric("ganserve_batch_size_sum", model=f"{DCGAN}:1") == 4001
    assert server.metric("ganserve_batch_size_count", model=f"{DCGAN}:1") == 64
    assert server.metric("ganserve_queue_depth", model=f"{DCGAN}:1") == 0
    assert sample(server, 1, 0).shape == (1, 32, 32, 1)  # and the batcher still serves


def test_instances_come_from_the_flags_unless_a_models_config_says(
    make_server: Callable, tmp_path: Path
) -> None:
    for name in (DCGAN, CGAN):
        shutil.copytree(MODELS / name, tmp_path / name)
    (tmp_path / CGAN / "config.json").write_text('{"instances": 1, "intra_op_threads": 2}')
    server = make_server(model_repository=tmp_path, instances=3, intra_op_threads=1)
    dcgan, cgan = (server.server.repo.get(name) for name in (DCGAN, CGAN))
    assert [r.threads for r in dcgan.runners] == [1, 1, 1] and dcgan.batcher.instances == 3
    assert [r.threads for r in cgan.runners] == [2] and cgan.batcher.instances == 1
    whole = sample(server, 30, 0)  # three instances, one model: the same bytes as ever
    with ThreadPoolExecutor(6) as pool:
        parts = list(pool.map(lambda i: sample(server, 5, 5 * i), range(6)))
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_a_broken_model_beside_good_ones(make_server: Callable, tmp_path: Path) -> None:
    for name in (DCGAN, CGAN):
        shutil.copytree(MODELS / name, tmp_path / name)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    server = make_server(model_repository=tmp_path)
    assert sample(server, 2, 0).shape == (2, 32, 32, 1)
    listed = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest()).models}
    assert listed["broken"].versions[0].state == pb.VersionState.FAILED
    assert listed["broken"].versions[0].error
    assert str(tmp_path) not in listed["broken"].versions[0].error  # no server paths shown
    assert "<repository>" in listed["broken"].versions[0].error
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Sample(pb.SampleRequest(model="broken", count=1))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.metric("ganserve_model_state", model="broken", state="failed") == 1
    assert server.metric("ganserve_model_state", model=DCGAN, state="ready") == 1
    health = health_pb2_grpc.HealthStub(server.channel)
    check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name)).status  # noqa: E731
    assert check("") == health_pb2.HealthCheckResponse.SERVING
    assert check("model/broken") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert check(f"model/{DCGAN}") == health_pb2.HealthCheckResponse.SERVING


def test_metrics_count_requests_images_and_latency(make_server: Callable) -> None:
    server = make_server()
    sample(server, 7, 0)
    sample(server, 3, 0)
    with pytest.raises(grpc.RpcError):
        sample(server, 0, 0)
    server.stub.Generate(pb.GenerateRequest(model=CGAN, count=4, balanced=True))
    m = server.metric
    assert m("ganserve_requests_total", model=DCGAN, method="Sample", code="OK") == 2
    assert m("ganserve_requests_total", model=DCGAN, method="Sample", code="INVALID_ARGUMENT") == 1
    assert m("ganserve_images_total", model=DCGAN, method="Sample") == 10
    assert m("ganserve_images_total", model=CGAN, method="Generate") == 4
    assert m("ganserve_request_latency_seconds_count", model=DCGAN, method="Sample") == 3
    assert m("ganserve_compute_latency_seconds_count", model=f"{CGAN}:1") == 1
    assert m("ganserve_queue_wait_seconds_count", model=f"{DCGAN}:1") == 2
    assert m("ganserve_model_state", model=PIX2PIX, version="1", state="ready") == 1
    text = server.metrics()
    assert re.search(r'ganserve_batch_size_bucket\{le="8.0",model="mnist-dcgan:1"\} 2.0', text)


def test_sigterm_lets_in_flight_calls_finish_and_refuses_new_ones() -> None:
    # a generous grace period: CI machines are shared; the stream takes about a second alone
    flags = ("--intra-op-threads", "1", "--grace-seconds", "60")
    with ServerProcess(*flags, env={**os.environ, "OMP_NUM_THREADS": "1"}) as server:
        process = server.process
        channel = grpc.insecure_channel(server.address)
        stub = __import__("ganserve.v1.ganserve_pb2_grpc", fromlist=["x"]).GeneratorStub(channel)
        received: list[int] = []
        errors: list[Exception] = []

        def long_stream() -> None:
            try:
                for chunk in stub.SampleStream(
                    pb.SampleRequest(model=DCGAN, count=2000, chunk_size=100)
                ):
                    received.append(chunk.images.shape[0])
            except grpc.RpcError as exc:
                errors.append(exc)

        reader = threading.Thread(target=long_stream)
        reader.start()
        while not received:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(model=DCGAN, count=1), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        reader.join(90)
        assert not errors and sum(received) == 2000  # the in-flight stream finished
        assert process.wait(90) == 0
        channel.close()
