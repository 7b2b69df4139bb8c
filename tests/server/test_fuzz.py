"""Random requests for every rpc, built from the proto's own descriptors, against a real server:
whatever the fields hold, the answer is OK or a named client error, never INTERNAL or UNKNOWN.
Mutated ones too: a valid message's bytes with bytes flipped, inserted, cut or appended, sent
as they are. `bench/fuzz.py` runs the same strategies for as many cases as asked.
"""

from __future__ import annotations

from typing import Any

import grpc
import hypothesis.strategies as st
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings

from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import CGAN, DCGAN, PIX2PIX, RunningServer

SERVICE = pb.DESCRIPTOR.services_by_name["Generator"]
MODELS = [DCGAN, CGAN, PIX2PIX, "", "nope", "x" * 300]
# numbers near the limits the server checks, plus anything at all
INTS = st.one_of(
    st.sampled_from([0, 1, 2, 7, 31, 32, 64, 100, 4096, 4097, 2**31 - 1, -1, -(2**31)]),
    st.integers(-(2**31), 2**31 - 1),
)
UINT64 = st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_INT32: INTS,
    FieldDescriptor.TYPE_INT64: st.one_of(INTS, st.integers(-(2**63), 2**63 - 1)),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
}


MODEL_OF = {"Sample": DCGAN, "Generate": CGAN, "Translate": PIX2PIX}
SMALL = st.integers(1, 8)


def _value(field: FieldDescriptor, depth: int, method: str) -> st.SearchStrategy[Any]:
    if field.name == "model":  # mostly the model the rpc serves, so the calls get deep
        right = MODEL_OF.get(method.removesuffix("Stream"), DCGAN)
        return st.one_of(st.just(right), st.just(right), st.sampled_from(MODELS))
    if field.name in ("count", "chunk_size", "version"):
        return st.one_of(SMALL, SMALL, SCALARS.get(field.type, INTS))
    if field.name == "values" and field.type != FieldDescriptor.TYPE_MESSAGE:
        return st.one_of(st.integers(0, 9), st.integers(0, 9), INTS)
    if field.name == "dtype":
        return st.sampled_from(["uint8", "float32", "int64", "float16", ""])
    if field.name == "shape":
        return st.lists(st.integers(-1, 40), max_size=5)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, depth + 1, method)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=20)
    return SCALARS[field.type]


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int, method: str) -> Any:
    cls = pb.__dict__.get(descriptor.name)
    if cls is None:  # a nested message type
        parent = pb.__dict__[descriptor.containing_type.name]
        cls = getattr(parent, descriptor.name)
    values: dict[str, Any] = {}
    oneofs = {o.name: draw(st.sampled_from([None, *o.fields])) for o in descriptor.oneofs}
    for field in descriptor.fields:
        if field.containing_oneof is not None and oneofs[field.containing_oneof.name] is not field:
            continue
        if field.name != "model" and (depth > 2 or not draw(st.booleans())):
            continue
        strategy = _value(field, depth, method)
        if field.is_repeated and field.name != "shape":
            values[field.name] = draw(st.lists(strategy, max_size=4))
        else:
            values[field.name] = draw(strategy)
    return cls(**values)


def message(descriptor: Descriptor, depth: int = 0, method: str = "") -> st.SearchStrategy[Any]:
    """Random instances of a message type, every field optional, oneofs exclusive."""
    return _message(descriptor, depth, method)


def call(server: RunningServer, method: str, request: Any) -> grpc.StatusCode:
    """Make one call (streams: read two replies, then cancel); its status code. `request` is a
    message, or bytes sent as they are."""
    rpc = SERVICE.methods_by_name[method]
    stub_method = getattr(server.stub, method)
    if isinstance(request, bytes):
        kind = ("stream" if rpc.client_streaming else "unary") + "_"
        kind += "stream" if rpc.server_streaming else "unary"
        stub_method = getattr(server.channel, kind)(f"/{SERVICE.full_name}/{method}")
    try:
        if rpc.client_streaming:
            replies = stub_method(iter([request, request]), timeout=20)
        else:
            replies = stub_method(request, timeout=20)
        if rpc.server_streaming:
            for i, _ in enumerate(replies):
                if i == 1:
                    replies.cancel()
                    break
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


REQUESTS = st.sampled_from(list(SERVICE.methods_by_name)).flatmap(
    lambda method: st.tuples(
        st.just(method), message(SERVICE.methods_by_name[method].input_type, 0, method)
    )
)


def _mutated(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """`data` after each edit (where, what, byte): flip a byte, insert one, cut the rest, or
    append one."""
    out = bytearray(data)
    for where, what, byte in edits:
        at = where % (len(out) + 1)
        if what == 0 and at < len(out):
            out[at] ^= byte or 0x80
        elif what == 1:
            out.insert(at, byte)
        elif what == 2:
            del out[at:]
        else:
            out.append(byte)
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 3), st.integers(0, 255)),
                 min_size=1, max_size=4)  # fmt: skip
MUTATED = REQUESTS.flatmap(
    lambda case: st.tuples(
        st.just(case[0]), EDITS.map(lambda edits: _mutated(case[1].SerializeToString(), edits))
    )
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same cases on every run: the suite stays deterministic
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(REQUESTS)
def test_no_request_gets_an_internal_error(server: RunningServer, case: tuple[str, Any]) -> None:
    method, request = case
    code = call(server, method, request)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (method, request)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(MUTATED)
def test_no_mutated_bytes_get_an_internal_error(
    server: RunningServer, case: tuple[str, bytes]
) -> None:
    method, data = case
    code = call(server, method, data)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (method, data)
