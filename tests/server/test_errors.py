"""The server's one exception tree: every error has a status code, read from one table, and the
SDK raises the class that mirrors it."""

import ast
from pathlib import Path

import grpc

import ganserve.errors as sdk
from ganserve.server import errors

SERVER = Path(__file__).resolve().parents[2] / "server"


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_serving_error_has_a_status_and_an_sdk_class() -> None:
    classes = _subclasses(errors.ServingError)
    assert len(classes) >= 9
    for cls in classes:
        code = errors.status_of(cls("x"))
        assert code is errors.STATUS[cls], cls
        assert code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        raised = sdk.from_rpc_error(_Failed(code))
        assert type(raised) is not sdk.ServerError and raised.code is code, cls


def test_no_module_but_errors_and_rpc_names_a_status_code_for_a_failure() -> None:
    allowed = {"errors.py", "rpc.py"}
    for path in sorted(SERVER.glob("*.py")):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "StatusCode":
                raise AssertionError(f"{path.name}:{node.lineno} chooses a status code")


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "x"
