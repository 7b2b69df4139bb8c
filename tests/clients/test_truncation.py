"""Truncated latents in bulk jobs: the same images as a truncated call, recorded in the
manifest, a resume that must ask for the same threshold, and headers without it unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ganserve import Client
from ganserve.bulk import formats
from ganserve.bulk.manifest import parse_manifest
from ganserve.cli import main
from ganserve.errors import InvalidArgument, ManifestError
from tests.clients.test_bulk import job, one_line
from tests.servers import CGAN, RunningServer

T = 0.5


def header(out: Path) -> dict:
    return json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["job"]


def test_a_truncated_job_makes_the_truncated_calls_images_and_records_it(
    server: RunningServer, tmp_path: Path
) -> None:
    job(server, tmp_path / "t", count=300, truncation=T)
    job(server, tmp_path / "plain", count=300)
    assert header(tmp_path / "t")["truncation"] == T
    assert "truncation" not in header(tmp_path / "plain")  # as every job before it had
    with Client(server.address) as client:
        want = client.generate(CGAN, 300, balanced=True, seed=3, truncation=T).pixels
        untruncated = client.generate(CGAN, 300, balanced=True, seed=3).pixels
    got = np.concatenate([np.load(p)["images"] for p in sorted((tmp_path / "t").glob("*.npz"))])
    assert np.array_equal(got, want) and not np.array_equal(got, untruncated)
    assert "--truncation 0.5" in (tmp_path / "t" / "README.md").read_text()
    assert main(["verify", str(tmp_path / "t")]) == 0


def test_a_resume_must_ask_for_the_same_threshold(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t"
    job(server, out, count=200, truncation=T)
    before = (out / "manifest.jsonl").read_bytes()
    for other in (0.0, 0.7):
        with pytest.raises(InvalidArgument, match="truncation"):
            job(server, out, count=200, truncation=other)
    assert (out / "manifest.jsonl").read_bytes() == before
    args = ["generate", "--server", server.address, "--model", CGAN, "--count", "10"]
    assert main([*args, "--truncation", "20", "--out", str(tmp_path / "bad")]) == 2
    one_line(capsys.readouterr().err, "ganserve generate", "truncation: 20", "0.1 to 10")
    assert not (tmp_path / "bad").exists()


def test_a_webdataset_samples_json_names_the_threshold_only_when_on() -> None:
    from ganserve.bulk import Job

    on, off = (Job("m", 1, 10, 3, "webdataset", 10, True, 2, ("a", "b"), t) for t in (T, 0.0))
    assert json.loads(formats._sample_json(on, 4, 0))["truncation"] == T
    assert "truncation" not in json.loads(formats._sample_json(off, 4, 0))


@pytest.mark.parametrize("value", [0, 0.0, 0.05, 11, "0.5", True])
def test_a_manifest_header_with_a_bad_threshold_is_refused(value: object) -> None:
    from ganserve.bulk import Job

    head = {**Job("m", 1, 10, 3, "npz", 10).header(), "truncation": value}
    with pytest.raises(ManifestError, match="truncation"):
        parse_manifest((json.dumps({"job": head}) + "\n").encode(), "manifest.jsonl")
