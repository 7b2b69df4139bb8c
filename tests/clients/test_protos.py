"""The generated gRPC code is exactly what `make protos` makes from protos/ (never hand-edited)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["ganserve_pb2.py", "ganserve_pb2.pyi", "ganserve_pb2_grpc.py"]


def test_generated_code_is_reproducible(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "protos"),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "protos" / "ganserve" / "v1" / "ganserve.proto"),
        ],
        check=True,
        cwd=ROOT,
    )
    for name in GENERATED:
        fresh = (tmp_path / "ganserve" / "v1" / name).read_text()
        committed = (ROOT / "clients" / "ganserve" / "v1" / name).read_text()
        assert fresh == committed, f"clients/ganserve/v1/{name} is stale: run `make protos`"
