"""The generated gRPC code is exactly what `make protos` makes from protos/ (never hand-edited)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = {
    "ganserve/v1/ganserve.proto": ["ganserve_pb2.py", "ganserve_pb2.pyi", "ganserve_pb2_grpc.py"],
    "ganserve/oip/grpc_service.proto": [
        "grpc_service_pb2.py",
        "grpc_service_pb2.pyi",
        "grpc_service_pb2_grpc.py",
    ],
}


@pytest.mark.parametrize("proto", sorted(PROTOS))
def test_generated_code_is_reproducible(tmp_path: Path, proto: str) -> None:
    subprocess.run(
        [
            *(sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "protos")),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "protos" / proto),
        ],
        check=True,
        cwd=ROOT,
    )
    folder = Path(proto).parent
    for name in PROTOS[proto]:
        fresh = (tmp_path / folder / name).read_text()
        committed = (ROOT / "clients" / folder / name).read_text()
        assert fresh == committed, f"clients/{folder}/{name} is stale: run `make protos`"
