"""The SDK against real servers on port 0: sync and async mirror each other."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import ganserve
from bench.echo_server import Echo
from ganserve import AsyncClient, Client
from ganserve.channels import targets as channel_targets
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc
from tests.servers import CGAN, DCGAN, PIX2PIX, RunningServer

PUBLIC = [
    "list_models",
    "describe_model",
    "sample",
    "generate",
    "translate",
    "translate_png",
    "inpaint",
    "sample_stream",
    "generate_stream",
    "interpolate",
    "interpolate_stream",
    "repository_index",
    "load_model",
    "unload_model",
]


class Mirror:
    """Runs the same call on Client or AsyncClient and returns plain results."""

    def __init__(self, kind: str, address: str | list[str], **options: Any) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        if self.loop:
            self.client = self.loop.run_until_complete(self._make(address, options))
        else:
            self.client = Client(address, **options)

    @staticmethod
    async def _make(address: str | list[str], options: dict) -> AsyncClient:
        return AsyncClient(address, **options)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)
        streaming = name.endswith("_stream")

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.loop is None:
                result = method(*args, **kwargs)
                return list(result) if streaming else result
            if streaming:

                async def collect() -> list:
                    return [batch async for batch in method(*args, **kwargs)]

                return self.loop.run_until_complete(collect())
            return self.loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        if self.loop:
            self.loop.run_until_complete(self.client.close())
            self.loop.close()
        else:
            self.client.close()


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, server: RunningServer) -> Iterator[Mirror]:
    mirror = Mirror(request.param, server.address, seed=0)
    yield mirror
    mirror.close()


def test_sync_and_async_clients_have_the_same_methods_and_signatures() -> None:
    for name in PUBLIC:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync) == inspect.signature(aio) or (
            str(inspect.signature(sync)).replace("Iterator", "AsyncIterator")
            == str(inspect.signature(aio))
        ), name


def test_every_public_method_is_in_the_mirrored_list() -> None:
    for cls in (Client, AsyncClient):
        methods = {n for n, v in vars(cls).items() if inspect.isfunction(v) and n[0] != "_"}
        assert methods - {"close"} == set(PUBLIC), cls


def test_model_control_loads_and_unloads_on_request(make_server: Callable) -> None:
    server = make_server(model_control="explicit", load_models=DCGAN)
    for kind in ("sync", "async"):
        client = Mirror(kind, server.address, retry=ganserve.RetryPolicy(max_attempts=1))
        try:
            index = client.repository_index(ready=True)
            assert [(m.name, m.version, m.state) for m in index] == [(DCGAN, 1, "READY")], kind
            assert client.load_model(CGAN) is None
            assert client.generate(CGAN, 2, balanced=True).labels.tolist() == [0, 1]
            client.unload_model(DCGAN)
            ready = client.repository_index(ready=True)
            assert [(m.name, m.state) for m in ready] == [(CGAN, "READY")], kind
            with pytest.raises(ganserve.NotFound, match="no-such-model"):
                client.load_model("no-such-model")
            client.load_model(DCGAN)  # back as it was for the other client
            client.unload_model(CGAN)
            index = client.repository_index()  # an unloaded model stays listed, not ready
            assert {(m.name, m.state) for m in index} == {(DCGAN, "READY"), (CGAN, "UNAVAILABLE")}
        finally:
            client.close()


def test_model_control_on_a_server_that_does_not_offer_it_is_an_sdk_error(
    server: RunningServer,
) -> None:
    with Client(server.address, retry=ganserve.RetryPolicy(max_attempts=1)) as client:
        assert {m.name for m in client.repository_index()} >= {CGAN, DCGAN}
        with pytest.raises(ganserve.GanserveError, match="model-control explicit"):
            client.unload_model(DCGAN)
        assert client.describe_model(DCGAN).versions[0].state == "READY"


def test_all_names_what_the_package_exports() -> None:
    public = {
        n for n, v in vars(ganserve).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    assert set(ganserve.__all__) == public | {"__version__"}
    assert len(ganserve.__all__) == len(set(ganserve.__all__))


def test_calls_return_numpy_images(client: Mirror, server: RunningServer, tmp_path: Path) -> None:
    models = {m.name: m for m in client.list_models()}
    assert models[CGAN].kind == "conditional" and models[CGAN].num_classes == 10
    info = client.describe_model(DCGAN)
    assert info.latent_size == 100 and info.versions[0].state == "READY"
    images = client.sample(DCGAN, 4, seed=3)
    assert images.pixels.shape == (4, 32, 32, 1) and images.pixels.dtype == np.uint8
    z = ganserve.latents(3, 0, 4, 100)  # the latent contract, reproduced locally
    assert client.sample(DCGAN, latents=z).pixels.tobytes() == images.pixels.tobytes()
    digits = client.generate(CGAN, 10, balanced=True, seed=1)
    assert digits.labels.tolist() == list(range(10))
    assert client.generate(CGAN, labels=[4, 2]).labels.tolist() == [4, 2]
    source = np.zeros((2, 32, 32, 1), np.uint8)
    assert client.translate(PIX2PIX, source).pixels.shape == (2, 32, 32, 1)
    chunks = client.sample_stream(DCGAN, 10, seed=3, chunk_size=4)
    assert [len(c) for c in chunks] == [4, 4, 2] and chunks[1].start_index == 4
    streamed = client.generate_stream(CGAN, 5, label=9, chunk_size=2)
    assert [c.labels.tolist() for c in streamed] == [[9, 9], [9, 9], [9]]
    paths = images.save_pngs(tmp_path / client.kind, prefix="dcgan-")
    assert [p.name for p in paths][:2] == ["dcgan-00000000.png", "dcgan-00000001.png"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")


def test_errors_map_to_one_exception_tree(client: Mirror) -> None:
    with pytest.raises(ganserve.NotFound):
        client.sample("nope", 1)
    with pytest.raises(ganserve.WrongModelKind, match="call Sample"):
        client.generate(DCGAN, 2, label=1)  # labels for an unconditional model
    with pytest.raises(ganserve.InvalidArgument, match="count"):
        client.sample(DCGAN, 0)
    with pytest.raises(ganserve.InvalidArgument, match="labels, label, balanced"):
        client.generate(CGAN, 2)  # caught before any call
    with pytest.raises(ganserve.GanserveError):
        client.sample(DCGAN, 10**6)


def test_names_grpc_cannot_join_get_a_channel_each_and_calls_alternate(
    make_server: Callable,
) -> None:
    a, b = make_server(), make_server()
    with Client([f"localhost:{a.server.port}", f"localhost:{b.server.port}"]) as two:
        assert len(two.targets) == 2  # two DNS names: gRPC Python has no one channel for both
        for _ in range(6):
            two.sample(DCGAN, 1)
    served = [
        s.metric("ganserve_requests_total", model=DCGAN, method="Sample", code="OK") for s in (a, b)
    ]
    assert served == [3, 3]


@pytest.mark.parametrize(
    ("addresses", "tls", "targets"),
    [
        (["10.0.0.1:1"], False, [("10.0.0.1:1", None)]),
        (["dns:///svc:1"], True, [("dns:///svc:1", None)]),
        (["10.0.0.1:1", "10.0.0.2:2"], False, [("ipv4:10.0.0.1:1,10.0.0.2:2", None)]),
        (["10.0.0.1:1", "10.0.0.1:2"], True, [("ipv4:10.0.0.1:1,10.0.0.1:2", "10.0.0.1")]),
        (["10.0.0.1:1", "10.0.0.2:2"], True, [("10.0.0.1:1", None), ("10.0.0.2:2", None)]),
        (["[::1]:1", "[::1]:2"], True, [("ipv6:[::1]:1,[::1]:2", "[::1]")]),
        (
            ["10.0.0.1:1", "[::1]:2", "a:3", "10.0.0.2:4"],
            False,
            [("ipv4:10.0.0.1:1,10.0.0.2:4", None), ("[::1]:2", None), ("a:3", None)],
        ),
        (["::1:2", "10.0.0.1:x"], False, [("::1:2", None), ("10.0.0.1:x", None)]),
    ],
)
def test_ip_addresses_join_one_round_robin_target(
    addresses: list[str], tls: bool, targets: list[tuple[str, str | None]]
) -> None:
    assert channel_targets(addresses, tls) == targets


def test_unavailable_servers_are_retried_then_reported() -> None:
    policy = ganserve.RetryPolicy(max_attempts=3, initial_backoff=0.01)
    with (
        Client("127.0.0.1:1", retry=policy, timeout=5) as nowhere,
        pytest.raises(ganserve.Unavailable),
    ):
        nowhere.sample(DCGAN, 1)


def test_calls_and_streams_survive_a_server_restart(make_server: Callable) -> None:
    first = make_server()
    port = first.server.port
    with Client(
        first.address,
        timeout=60,
        seed=0,
        retry=ganserve.RetryPolicy(max_attempts=50, max_backoff=0.5),
    ) as client:
        whole = np.concatenate(
            [c.pixels for c in client.sample_stream(DCGAN, 600, seed=2, chunk_size=50)]
        )
        stream = client.sample_stream(DCGAN, 600, seed=2, chunk_size=50)
        got = [next(stream).pixels]
        first.stop(grace=0)  # the stream breaks mid-way, and the server is gone for a while
        restarted: list[RunningServer] = []
        timer = threading.Timer(1.0, lambda: restarted.append(make_server(port=port)))
        timer.start()
        got += [c.pixels for c in stream]  # retried until the server is back, then resumed
        timer.join()
        assert np.concatenate(got).tobytes() == whole.tobytes()  # nothing lost or repeated
        assert client.sample(DCGAN, 2).pixels.shape == (2, 32, 32, 1)


class _CancelsFirst(Echo):
    """A real gRPC server whose side cancels the first `n` calls (as gRPC core does to calls
    it had not handed over when a server shuts down), then answers."""

    def __init__(self, n: int) -> None:
        super().__init__((32, 32, 1))
        self.left = n
        self.calls = 0

    async def Sample(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.left:
            self.left -= 1
            await context.abort(grpc.StatusCode.CANCELLED, "server shutdown")
        return await super().Sample(request, context)


def test_a_call_cancelled_by_the_server_side_is_retried_and_one_the_caller_cancels_is_not() -> None:
    async def go() -> None:
        echo = _CancelsFirst(2)
        server = grpc.aio.server()
        pb_grpc.add_GeneratorServicer_to_server(echo, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        policy = ganserve.RetryPolicy(max_attempts=5, initial_backoff=0.01)
        try:
            async with AsyncClient(f"127.0.0.1:{port}", retry=policy, timeout=10) as client:
                assert len(await client.sample("echo", 3)) == 3
                assert echo.calls == 3  # two cancelled by the server, retried
                echo.left = 10**6
                task = asyncio.ensure_future(client.sample("echo", 1))
                await asyncio.sleep(0)
                task.cancel()  # the caller's own cancel ends the call: no retry
                with pytest.raises(asyncio.CancelledError):
                    await task
                with pytest.raises(ganserve.Cancelled):  # retries run out: reported
                    await client.sample("echo", 1)
        finally:
            await server.stop(0)

    asyncio.run(go())


@pytest.mark.parametrize("as_list", [False, True], ids=["ipv4-target", "address-list"])
def test_one_target_naming_two_servers_is_balanced_by_grpcs_round_robin(
    make_server: Callable, as_list: bool
) -> None:
    a, b = make_server(), make_server()
    addresses = [f"127.0.0.1:{a.server.port}", f"127.0.0.1:{b.server.port}"]
    with Client(addresses if as_list else f"ipv4:{','.join(addresses)}") as client:
        assert len(client.targets) == 1  # one channel: gRPC balances, not the SDK
        for _ in range(40):
            client.sample(DCGAN, 1)
    calls = [s.metric("ganserve_requests_total", model=DCGAN, method="Sample") for s in (a, b)]
    # each call to the next ready backend (the first few to whichever connected first)
    assert sum(calls) == 40 and min(calls) >= 12, calls


class _BreaksAfterTheLastImage(Echo):
    """Streams every image asked for, then ends the call with UNAVAILABLE (a server that
    shut down between its last reply and the status)."""

    def __init__(self) -> None:
        super().__init__((32, 32, 1))
        self.calls = 0

    async def SampleStream(self, request: Any, context: Any) -> Any:
        self.calls += 1
        async for reply in super().SampleStream(request, context):
            yield reply
        await context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")


@pytest.mark.parametrize("aio", [False, True], ids=["Client", "AsyncClient"])
def test_a_stream_whose_status_breaks_after_every_image_arrived_is_done(aio: bool) -> None:
    async def go() -> None:
        echo = _BreaksAfterTheLastImage()
        server = grpc.aio.server()
        pb_grpc.add_GeneratorServicer_to_server(echo, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            if aio:
                async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
                    got = [len(b) async for b in client.sample_stream("echo", 6, chunk_size=4)]
            else:

                def blocking() -> list[int]:
                    with Client(f"127.0.0.1:{port}", timeout=10) as client:
                        return [len(b) for b in client.sample_stream("echo", 6, chunk_size=4)]

                got = await asyncio.get_running_loop().run_in_executor(None, blocking)
            assert got == [4, 2] and echo.calls == 1  # no resume asking for 0 more images
        finally:
            await server.stop(0)

    asyncio.run(go())
