"""The SDK installs alone: grpcio, protobuf and numpy, and nothing heavy."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_sdk_installs_and_imports_without_torch_or_onnxruntime(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # a copy, so that building never writes into the checkout
    source = tmp_path / "clients"
    subprocess.run(["cp", "-r", str(ROOT / "clients"), str(source)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(source)], check=True, capture_output=True
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert {"ganserve-client", "grpcio", "protobuf", "numpy"} <= names
    assert not names & {"torch", "onnxruntime", "onnx", "prometheus-client", "pillow"}
    check = (
        "import sys, ganserve; from ganserve.bulk import run_job; "
        "assert not {'torch', 'onnxruntime'} & set(sys.modules); print(ganserve.__version__)"
    )
    out = subprocess.run(
        [str(python), "-c", check], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "0.1.0"
