"""Bulk jobs to object storage: `--out s3://bucket/prefix` against an S3-compatible server (moto's,
started here on port 0), with the local guarantees: the same bytes as a local job, verify, resume
after a kill -9, workers sharing a prefix, and no credential in any output."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import moto.server as moto_server  # dev dependencies: a missing one fails, it does not skip
import pytest
import s3fs  # noqa: F401

from ganserve.bulk import Job, Manifest, verify
from ganserve.bulk.store import FsspecStore, open_store
from ganserve.cli import main
from ganserve.errors import InvalidArgument
from tests.clients.test_bulk import checksums, one_line
from tests.servers import CGAN, PIX2PIX, RunningServer

KEY_ID, SECRET = "AKIAGANSERVETEST0042", "ganserve-fake-secret-Zq8XvT3pL0wR"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """An S3-compatible server for the module (moto's, in a thread, on a free port)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    yield f"http://{host}:{port}"
    s3.stop()


@pytest.fixture
def bucket(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> str:
    """A new bucket, and the standard AWS environment pointing at the server (as a Kubernetes
    Secret would give it): what botocore, and so s3fs and the commands' subprocesses, read."""
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    import fsspec.core

    fs, _ = fsspec.core.url_to_fs("s3://", skip_instance_cache=True)
    name = "ganserve-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    fs.mkdir(name)
    return name


def objects(url: str) -> dict[str, str]:
    """Every object under a prefix: its name below the prefix -> sha256 (as `checksums`)."""
    store = open_store(url)
    assert isinstance(store, FsspecStore)
    store.fs.invalidate_cache()
    keys = store.fs.find(store.root)
    return {
        k[len(store.root) + 1 :]: hashlib.sha256(store.fs.cat_file(k)).hexdigest()
        for k in sorted(keys)
    }


def no_credentials(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and KEY_ID not in text


def generate(server: RunningServer, out: str, *flags: str) -> list[str]:
    return [
        *("generate", "--server", server.address, "--model", CGAN, "--seed", "3"),
        *("--shard-size", "100", "--quiet", "--out", out, *flags),
    ]


@pytest.mark.parametrize("fmt", ["npz", "webdataset"])
def test_a_job_to_a_bucket_equals_a_local_job_byte_for_byte(
    server: RunningServer,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    flags = ("--count", "250", "--format", fmt)
    assert main(generate(server, str(tmp_path / "local"), *flags)) == 0
    url = f"s3://{bucket}/digits/{fmt}"
    assert main(generate(server, url, *flags)) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["out"] == url and summary["shards"] == 3
    made = objects(url)
    assert made == checksums(tmp_path / "local")  # the manifest, card and wids index too
    assert verify(url) == []
    assert main(["verify", url]) == 0
    assert main(generate(server, url, *flags)) == 0  # done: nothing redone, the same bytes
    assert objects(url) == made
    out, err = capsys.readouterr()
    no_credentials(out, err, json.dumps(made), open_store(url).read("manifest.jsonl").decode())
    store = open_store(url)
    store.write("shard-00001.npz" if fmt == "npz" else "shard-000001.tar", b"damaged")
    assert verify(url) == ["shard 1: files missing or not matching the manifest"]


def test_a_job_to_a_bucket_killed_with_sigkill_resumes_to_the_same_bytes(
    server: RunningServer, bucket: str, tmp_path: Path
) -> None:
    flags = ("--count", "3000", "--streams", "1")
    assert main(generate(server, str(tmp_path / "straight"), *flags)) == 0
    url = f"s3://{bucket}/killed"
    command = [sys.executable, "-m", "ganserve.cli", *generate(server, url, *flags)]
    process = subprocess.Popen(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = open_store(url)
    deadline = time.monotonic() + 120
    while (store.read("manifest.jsonl") or b"").count(b"\n") < 4:
        assert time.monotonic() < deadline and process.poll() is None, "job never got going"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=30)
    problems = verify(url)
    assert problems, "the kill came too late to test anything"
    assert all("missing from the manifest" in p for p in problems), problems  # never torn
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert objects(url) == checksums(tmp_path / "straight")
    assert verify(url) == []
    no_credentials(out, err, resumed.stdout, resumed.stderr)


def test_two_workers_on_a_bucket_prefix_then_merge_equal_one_worker(
    server: RunningServer, bucket: str, tmp_path: Path
) -> None:
    assert main(generate(server, str(tmp_path / "one"), "--count", "600")) == 0
    url = f"s3://{bucket}/workers"
    argv = [sys.executable, "-m", "ganserve.cli", *generate(server, url, "--count", "600")]
    workers = [
        subprocess.Popen(
            [*argv, "--workers", "2"],
            env={**os.environ, "JOB_COMPLETION_INDEX": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]  # no shared volume: each reaches the bucket on its own
    results = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], results
    assert sorted(json.loads(out)["made_shards"] for out, _ in results) == [3, 3]
    assert main(["verify", url]) == 1  # not merged yet
    assert main(["merge", url]) == 0
    assert objects(url) == checksums(tmp_path / "one")  # the worker manifests are gone
    assert main(["verify", url]) == 0
    no_credentials(*(text for result in results for text in result))


def test_a_missing_bucket_is_one_line_and_shows_no_credentials(
    server: RunningServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{bucket}-nosuch/digits"
    assert main(generate(server, url, "--count", "5")) == 2
    out, err = capsys.readouterr()
    one_line(err, "ganserve generate", url, "no bucket")
    no_credentials(out, err)
    assert main(["merge", url]) == 1  # not ready: nothing there
    assert main(["verify", url]) == 1
    out, err = capsys.readouterr()
    assert "manifest.jsonl: missing" in err
    no_credentials(out, err)


def test_of_two_jobs_starting_on_one_empty_prefix_one_is_refused(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"s3://{bucket}/race")
    first = Manifest(store, Job(CGAN, 1, 100).header())
    second = Manifest(store, Job(CGAN, 1, 200).header())
    claim, seen = Manifest._claim, []

    def late(self: Manifest) -> dict[int, dict] | None:
        """The second found the prefix empty, then the first made its manifest."""
        seen.append(self)
        if self is second and seen.count(second) == 1:
            assert claim(self) is None
            assert first.resume(lambda k, r: None) == {}
            return None
        return claim(self)

    monkeypatch.setattr(Manifest, "_claim", late)
    with pytest.raises(InvalidArgument, match="holds a different job"):
        second.resume(lambda k, r: None)  # its conditional create failed: checked again
    assert seen == [second, first, second]
    assert json.loads(store.read("manifest.jsonl") or b"") == {"job": first.header}


def test_a_translation_to_a_bucket_equals_a_local_one(
    server: RunningServer, bucket: str, tmp_path: Path
) -> None:
    import numpy as np

    from ganserve.png import encode_png

    source = tmp_path / "edges"
    source.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        image = ((rng.random((32, 32, 1)) > 0.85) * 255).astype(np.uint8)
        (source / f"{i:03d}.png").write_bytes(encode_png(image))
    url = f"s3://{bucket}/translated"
    for out in (str(tmp_path / "local"), url):
        argv = ["translate", "--server", server.address, "--model", PIX2PIX, "--quiet"]
        assert main([*argv, "--input", str(source), "--shard-size", "3", "--out", out]) == 0
    assert objects(url) == checksums(tmp_path / "local")
    assert verify(url) == []
