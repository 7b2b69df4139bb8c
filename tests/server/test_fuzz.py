"""Random requests for every rpc of both protocols (ganserve.v1 and the Open Inference
Protocol), built from the protos' own descriptors, against a real server: whatever the fields
hold, the answer is OK or a named client error, never INTERNAL or UNKNOWN. Mutated ones too: a
valid message's bytes with bytes flipped, inserted, cut or appended, sent as they are.

What found issue #22's holes is generated on purpose: PNGs with repeated, reordered, resized
(a second IHDR, an understated or oversized one), split, inserted, corrupted or truncated chunks;
OIP parameters of every InferParameter kind with odd strings (non-ASCII digits, 5,000 digits,
signs, spaces) and out-of-range integers; versions likewise; inputs of every datatype.
`bench/fuzz.py` runs the same strategies for as many cases as asked.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import grpc
import hypothesis.strategies as st
import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from PIL import Image

from ganserve.oip import grpc_service_pb2 as oip
from ganserve.png import encode_png
from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import CGAN, DCGAN, INPAINT, PIX2PIX, RunningServer

SERVICE = pb.DESCRIPTOR.services_by_name["Generator"]
OIP_SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
MODELS = [DCGAN, CGAN, PIX2PIX, INPAINT, "", "nope", "x" * 300]
# strings a number parser meets: non-ASCII digits, huge, signed, spaced, other notations
ODD_NUMBERS = ["", "0", "1", "2", "01", "²", "٣", "１", "9" * 5000, "-1", "+1", " 1", "1 ",
               "1.0", "1e3", "0x10", str(2**63 - 1), str(2**63), str(2**64 - 1), str(2**64),
               str(10**30)]  # fmt: skip
_ODD = st.sampled_from(ODD_NUMBERS)
NUMBER_TEXT = st.one_of(_ODD, _ODD, st.integers(-(2**70), 2**70).map(str), st.text(max_size=12))
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


MODEL_OF = {"Sample": DCGAN, "Generate": CGAN, "Translate": PIX2PIX, "Interpolate": CGAN}
SMALL = st.integers(1, 8)


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos + 12 <= len(png):
        (n,) = struct.unpack_from(">I", png, pos)
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def _png_bytes(chunks: list[tuple[bytes, bytes]], bad_crc: int = -1) -> bytes:
    parts = [b"\x89PNG\r\n\x1a\n"]
    for i, (kind, payload) in enumerate(chunks):
        crc = zlib.crc32(kind + payload) ^ (1 if i == bad_crc else 0)
        parts.append(struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc))
    return b"".join(parts)


def _pillow_png(mode: str, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size)).save(buffer, "PNG")
    return buffer.getvalue()


_noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
BASE_PNGS = [
    encode_png(_noise[:32, :32, :1]),
    encode_png(_noise[:64, :64, :1]),
    encode_png(_noise[:32, :32]),
    _pillow_png("P", 32),  # a palette: PLTE before IDAT
    _pillow_png("I;16", 32),
]
SIDES = st.sampled_from([0, 1, 31, 32, 33, 64, 2048, 4096, 8192, 65535, 2**31 - 1, 2**32 - 1])
CHUNK_TYPES = st.sampled_from(
    [
        b"IHDR",
        b"IDAT",
        b"IEND",
        b"PLTE",
        b"tEXt",
        b"acTL",
        b"fcTL",
        b"ABCD",
        b"abcd",
        b"\x00\x01\x02\x03",
    ]
)
_INDEX = st.integers(0, 8)
PNG_EDITS = st.one_of(
    st.tuples(st.just("repeat"), _INDEX),
    st.tuples(st.just("swap"), _INDEX, _INDEX),
    st.tuples(st.just("resize"), SIDES, SIDES),
    st.tuples(st.just("second_ihdr"), SIDES, SIDES),
    st.tuples(st.just("split"), _INDEX, st.integers(0, 2**16)),
    st.tuples(st.just("insert"), _INDEX, CHUNK_TYPES, st.binary(max_size=16)),
    st.tuples(st.just("retype"), _INDEX, CHUNK_TYPES),
    st.tuples(st.just("corrupt"), _INDEX, st.integers(0, 2**16), st.integers(1, 255)),
    st.tuples(st.just("oversize"), _INDEX),  # a length past the end of the file
    st.tuples(st.just("bad_crc"), _INDEX),
    st.tuples(st.just("truncate"), st.integers(0, 2**16)),
)


def _edited_png(base: bytes, edits: list[tuple]) -> bytes:
    """`base` after chunk-level edits; CRCs are recomputed unless an edit breaks one, so the
    edits reach the parts of a reader past its checksum check."""
    chunks, bad_crc, cut, oversize = _png_chunks(base), -1, None, -1
    for edit in edits:
        op, args, i = edit[0], edit[1:], (edit[1] % max(len(chunks), 1)) if len(edit) > 1 else 0
        if op == "repeat" and chunks:
            chunks.insert(i, chunks[i])
        elif op == "swap" and chunks:
            j = args[1] % len(chunks)
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif op in ("resize", "second_ihdr"):
            header = bytes(chunks[0][1]) if chunks and chunks[0][0] == b"IHDR" else bytes(13)
            resized = (b"IHDR", struct.pack(">II", *args) + header[8:13])
            if op == "resize" and chunks:
                chunks[0] = resized
            else:
                chunks.insert(1, resized)
        elif op == "split" and chunks:
            kind, payload = chunks[i]
            at = args[1] % (len(payload) + 1)
            chunks[i : i + 1] = [(kind, payload[:at]), (kind, payload[at:])]
        elif op == "insert":
            chunks.insert(args[0] % (len(chunks) + 1), (args[1], args[2]))
        elif op == "retype" and chunks:
            chunks[i] = (args[1], chunks[i][1])
        elif op == "corrupt" and chunks and chunks[i][1]:
            kind, payload = chunks[i]
            at = args[1] % len(payload)
            chunks[i] = (kind, payload[:at] + bytes([payload[at] ^ args[2]]) + payload[at + 1 :])
        elif op == "oversize":
            oversize = i
        elif op == "bad_crc":
            bad_crc = i
        elif op == "truncate":
            cut = args[0]
    data = _png_bytes(chunks, bad_crc)
    if 0 <= oversize < len(chunks):
        at = 8 + sum(12 + len(p) for _, p in chunks[:oversize])
        data = data[:at] + struct.pack(">I", 2**31 - 1) + data[at + 4 :]
    return data if cut is None else data[: cut % (len(data) + 1)]


PNGS = st.one_of(
    st.sampled_from(BASE_PNGS),
    st.tuples(st.sampled_from(BASE_PNGS), st.lists(PNG_EDITS, min_size=1, max_size=3)).map(
        lambda case: _edited_png(*case)
    ),
)


def _value(field: FieldDescriptor, depth: int, method: str) -> st.SearchStrategy[Any]:
    if field.name == "model":  # mostly the model the rpc serves, so the calls get deep
        right = MODEL_OF.get(method.removesuffix("Stream"), DCGAN)
        return st.one_of(st.just(right), st.just(right), st.sampled_from(MODELS))
    if field.name in ("model_name", "name"):  # OIP: every model serves ModelInfer
        served = st.sampled_from([DCGAN, CGAN, PIX2PIX])
        return st.one_of(served, served, st.sampled_from(MODELS))
    if field.type == FieldDescriptor.TYPE_STRING and (
        field.name in ("model_version", "string_param")
        or (field.name == "version" and field.containing_type.file is oip.DESCRIPTOR)
    ):
        return NUMBER_TEXT
    if field.name in ("png", "mask_png"):
        return PNGS
    if field.name == "datatype":
        return st.sampled_from(["FP32", "INT64", "UINT8", "INT32", "FP16", "BYTES", "BOOL", ""])
    if field.name in ("count", "chunk_size", "version", "steps"):
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
    cls = GetMessageClass(descriptor)
    values: dict[str, Any] = {}
    oneofs = {o.name: draw(st.sampled_from([None, *o.fields])) for o in descriptor.oneofs}
    for field in descriptor.fields:
        if field.containing_oneof is not None and oneofs[field.containing_oneof.name] is not field:
            continue
        model = field.name in ("model", "model_name", "name")
        if not model and (depth > 2 or not draw(st.booleans())):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            keys = st.sampled_from(["seed", "start_index", "count", "path_steps", "other"])
            values[field.name] = draw(
                st.dictionaries(keys, _value(value, depth, method), max_size=3)
            )
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


def call(
    server: RunningServer, method: str, request: Any, service: ServiceDescriptor = SERVICE
) -> grpc.StatusCode:
    """Make one call (streams: read two replies, then cancel); its status code. `request` is a
    message, or bytes sent as they are; `service` is ganserve.v1's or the OIP's."""
    rpc = service.methods_by_name[method]
    if not isinstance(request, bytes):
        request = request.SerializeToString()
    kind = ("stream" if rpc.client_streaming else "unary") + "_"
    kind += "stream" if rpc.server_streaming else "unary"
    stub_method = getattr(server.channel, kind)(f"/{service.full_name}/{method}")
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


def _requests(service: ServiceDescriptor) -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(list(service.methods_by_name)).flatmap(
        lambda method: st.tuples(
            st.just(method), message(service.methods_by_name[method].input_type, 0, method)
        )
    )


REQUESTS = _requests(SERVICE)
OIP_REQUESTS = _requests(OIP_SERVICE)
# what the PNG and OIP holes were found with, drawn more often than the whole API draws them
TRANSLATIONS = st.tuples(
    st.just("Translate"),
    st.one_of(
        st.builds(
            pb.TranslateRequest,
            model=st.sampled_from([PIX2PIX, PIX2PIX, "mnist-sr4x"]),
            png=st.lists(PNGS, min_size=1, max_size=3),
        ),
        st.builds(  # an inpainting model: hostile PNGs as its masks too
            pb.TranslateRequest,
            model=st.just(INPAINT),
            png=st.lists(PNGS, min_size=1, max_size=2),
            mask_png=st.lists(PNGS, min_size=0, max_size=2),
        ),
    ),
)
PARAMETER = st.one_of(
    st.builds(
        oip.InferParameter,
        int64_param=st.one_of(SMALL, INTS, SCALARS[FieldDescriptor.TYPE_INT64]),
    ),
    st.builds(oip.InferParameter, uint64_param=st.one_of(SMALL, UINT64)),
    st.builds(oip.InferParameter, string_param=st.one_of(SMALL.map(str), NUMBER_TEXT)),
    st.builds(oip.InferParameter, string_param=NUMBER_TEXT),
    st.builds(oip.InferParameter, bool_param=st.booleans()),
    st.builds(oip.InferParameter, double_param=st.floats()),
)
LABEL_FIELDS = {"INT64": "int64_contents", "UINT8": "uint_contents", "FP32": "fp32_contents",
                "INT32": "int_contents", "BYTES": "bytes_contents"}  # fmt: skip


@st.composite
def _infer(draw: st.DrawFn) -> oip.ModelInferRequest:
    """A ModelInfer that is nearly right: a generator, odd parameters, maybe a label."""
    request = oip.ModelInferRequest(
        model_name=draw(st.sampled_from([DCGAN, CGAN])),
        model_version=draw(st.one_of(st.just(""), st.just("1"), NUMBER_TEXT)),
    )
    for name in ("seed", "start_index", "count", "path_steps", "path_end_seed", "path_end_index"):
        if draw(st.booleans()):
            request.parameters[name].CopyFrom(draw(PARAMETER))
    if draw(st.booleans()):
        method = st.sampled_from(["spherical", "linear", "", "Linear"])
        request.parameters["path_method"].CopyFrom(
            draw(st.one_of(st.builds(oip.InferParameter, string_param=method), PARAMETER))
        )
    if draw(st.booleans()):
        datatype = draw(st.sampled_from(list(LABEL_FIELDS)))
        values: list[Any] = draw(st.lists(st.one_of(st.integers(0, 9), INTS), max_size=4))
        if datatype == "UINT8":
            values = [v % 256 for v in values]
        elif datatype == "BYTES":
            values = [str(v).encode() for v in values]
        tensor = request.inputs.add(name="label", datatype=datatype, shape=[len(values)])
        getattr(tensor.contents, LABEL_FIELDS[datatype]).extend(values)
    return request


INFERS = st.tuples(
    st.just("ModelInfer"),
    st.one_of(_infer(), _infer(), message(oip.ModelInferRequest.DESCRIPTOR, 0, "ModelInfer")),
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


def _mutations(cases: st.SearchStrategy[tuple]) -> st.SearchStrategy[tuple]:
    return cases.flatmap(
        lambda case: st.tuples(
            st.just(case[0]),
            EDITS.map(lambda edits: _mutated(case[1].SerializeToString(), edits)),
            *(st.just(extra) for extra in case[2:]),
        )
    )


# a case is (method, request) for ganserve.v1, (method, request, OIP_SERVICE) for the OIP
OIP_REQUESTS = OIP_REQUESTS.map(lambda case: (*case, OIP_SERVICE))
INFERS = INFERS.map(lambda case: (*case, OIP_SERVICE))
MUTATED = _mutations(REQUESTS)
OIP_MUTATED = _mutations(OIP_REQUESTS)
# every strategy, for bench/fuzz.py: half whole messages, half mutated bytes
EVERYTHING = st.one_of(
    REQUESTS, OIP_REQUESTS, TRANSLATIONS, INFERS, MUTATED, OIP_MUTATED, MUTATED, OIP_MUTATED
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


SMALL_RUN = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SMALL_RUN
@given(st.one_of(OIP_REQUESTS, INFERS, INFERS))
def test_no_oip_request_gets_an_internal_error(server: RunningServer, case: tuple) -> None:
    code = call(server, *case)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), case[:2]


@SMALL_RUN
@given(TRANSLATIONS)
def test_no_png_gets_an_internal_error(server: RunningServer, case: tuple) -> None:
    code = call(server, *case)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), case[:2]


@SMALL_RUN
@given(OIP_MUTATED)
def test_no_mutated_oip_bytes_get_an_internal_error(server: RunningServer, case: tuple) -> None:
    code = call(server, *case)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), case[:2]
