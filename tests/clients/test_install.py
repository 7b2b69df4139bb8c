"""The SDK installs alone: `pip install .` without extras brings grpcio, protobuf and numpy,
and nothing heavy; it works on the oldest protobuf its generated code allows (6.30) and on the
newest (7), and the SDK's own tests run there with pytest alone."""

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import DCGAN, RunningServer, images

ROOT = Path(__file__).resolve().parents[2]
# what the one distribution builds from (pyproject.toml's package-dir)
SOURCES = ("pyproject.toml", "README.md", "clients", "server", "training", "export")
# tests that need the SDK alone (tests/conftest.py imports the server only when a test asks)
SDK_TESTS = ("tests/clients/test_latent.py", "tests/clients/test_png.py")


def test_one_distribution_ships_the_package_and_the_command() -> None:
    """A second pyproject shipping `ganserve` (as clients/pyproject.toml once did) would
    overwrite the first's files and its `ganserve` script when both are installed."""
    listed = subprocess.run(
        ["git", "ls-files", "*pyproject.toml"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    assert listed == ["pyproject.toml"]


def copy_sources(to: Path) -> Path:
    """The package's sources, copied, so that building never writes into the checkout."""
    to.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(ROOT / name, to / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, to / name)
    return to


@pytest.mark.timeout(600)
@pytest.mark.parametrize("protobuf", ["protobuf==6.30.0", "protobuf>=7"])
def test_sdk_installs_alone_and_calls_a_server(
    tmp_path: Path, protobuf: str, server: RunningServer
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    source = copy_sources(tmp_path / "src")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(source), protobuf],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert {"ganserve", "grpcio", "protobuf", "numpy"} <= names
    assert not names & {"torch", "onnxruntime", "onnx", "prometheus-client", "pillow"}
    check = (
        "import sys, ganserve; from ganserve.bulk import run_job; "
        "assert not {'torch', 'onnxruntime'} & set(sys.modules); print(ganserve.__version__)"
    )
    out = subprocess.run(
        [str(python), "-c", check], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "0.1.0"
    call = (
        "import hashlib, ganserve, google.protobuf as p; "
        f"c = ganserve.Client({server.address!r}); x = c.sample('mnist-dcgan', 4, seed=3); "
        "print(p.__version__, hashlib.sha256(x.pixels).hexdigest())"
    )
    out = subprocess.run(
        [str(python), "-c", call], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    version, digest = out.stdout.split()
    assert version.startswith("6.30." if "6.30" in protobuf else "7.")
    want = images(server.stub.Sample(pb.SampleRequest(model=DCGAN, count=4, seed=3)))
    assert digest == hashlib.sha256(want).hexdigest()
    # the SDK's tests, from the checkout, on the installed SDK with pytest and nothing else
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "pytest"], check=True, capture_output=True
    )
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDK_TESTS],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-3000:]


@pytest.mark.timeout(300)
def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """server, training and export install as ganserve.server, ganserve.training and
    ganserve.export: nothing else lands in site-packages to collide with other projects."""
    source = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(source)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("ganserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ganserve"}
    for module in ("server/app.py", "training/cli.py", "export/onnx_export.py", "oip/__init__.py"):
        assert f"ganserve/{module}" in names
