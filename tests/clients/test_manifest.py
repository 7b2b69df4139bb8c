"""The manifest reader, verify and merge against hand-made and hostile manifests (no server).

The datasets are made with the bulk job's own writer from constant pixels: what is checked is
the manifest's schema, not the images.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ganserve.bulk import MANIFEST, Dataset, Job, verify, worker_manifest
from ganserve.cli import main

DIGITS = tuple(str(i) for i in range(10))


def make_dataset(out: Path, fmt: str = "npz", count: int = 30, shard_size: int = 10) -> Dataset:
    """A finished dataset of a conditional job (ten classes), as the bulk job writes it."""
    job = Job("mnist-cgan", 1, count, 3, fmt, shard_size, True, 10, DIGITS)
    dataset = Dataset(out, job)
    out.mkdir(parents=True)
    records = {}
    for k in range(job.shards):
        _, n = job.span(k)
        records[k] = dataset.write(k, np.full((n, 4, 4, 1), k, np.uint8))
    dataset.manifest.finish(records)
    return dataset


def lines(out: Path, name: str = MANIFEST) -> list[Any]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def write_lines(path: Path, values: list[Any]) -> None:
    path.write_text("".join(json.dumps(v) + "\n" for v in values))


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished npz dataset: 30 images, shards of 10, seed 3 (copied by each test)."""
    out = tmp_path_factory.mktemp("original") / "ds"
    make_dataset(out)
    assert verify(out) == []
    return out


@pytest.fixture
def dataset(original: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(original, out)
    return out


def _set(where: int, key: str, value: Any) -> Callable[[list[Any]], None]:
    def edit(values: list[Any]) -> None:
        (values[0]["job"] if where == 0 else values[where])[key] = value

    return edit


def _drop(where: int, key: str) -> Callable[[list[Any]], None]:
    def edit(values: list[Any]) -> None:
        del (values[0]["job"] if where == 0 else values[where])[key]

    return edit


def _replace(where: int, value: Any) -> Callable[[list[Any]], None]:
    def edit(values: list[Any]) -> None:
        values[where] = value

    return edit


# Each breaks the schema: verify and merge answer one line naming the field, status 2.
MALFORMED: dict[str, tuple[Callable[[list[Any]], None], str]] = {
    "string count": (_set(0, "count", "30"), "count"),
    "bool count": (_set(0, "count", True), "count"),
    "record count 'abc'": (_set(2, "count", "abc"), "line 3: count: 'abc'"),
    "shard_size 0": (_set(0, "shard_size", 0), "shard_size"),
    "no class_names": (_drop(0, "class_names"), "class_names"),
    "no sha256": (_drop(1, "sha256"), "sha256"),
    "sha256 not hex": (_set(1, "sha256", "x" * 64), "sha256"),
    "extra header key": (_set(0, "colour", "blue"), "colour"),
    "list header": (_replace(0, {"job": [1, 2]}), "job"),
    "header a list": (_replace(0, [{"job": {}}]), "line 1"),
    "shard 'abc'": (_set(1, "shard", "abc"), "shard"),
    "negative seed": (_set(0, "seed", -1), "seed"),
    "seed of 65 bits": (_set(0, "seed", 2**64), "seed"),
    "float version": (_set(1, "version", 1.0), "version"),
    "unknown format": (_set(0, "format", "tiff"), "format"),
    "class names not strings": (_set(0, "class_names", list(range(10))), "class_names"),
    "a number line": (_replace(2, 3), "line 3"),
    "a null line": (_replace(2, None), "line 3"),
    "a second header": (_replace(2, {"job": {}}), "line 3"),
    "png files as a path": (_set(1, "files", "../x.png"), "files"),
}


def _malformed_bytes(dataset: Path, case: str) -> bytes:
    values = lines(dataset)
    edit, _ = MALFORMED[case]
    edit(values)
    return "".join(json.dumps(v) + "\n" for v in values).encode()


# Bytes from a valid manifest's: all of them.
RAW: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda _: b"", "empty"),
    "not UTF-8": (lambda valid: valid.split(b"\n")[0] + b"\n\xff\xfe\n", "line 2: not UTF-8"),
    "not JSON": (lambda _: b"model,count\ncgan,30\n", "line 1: not JSON"),
    "a line not JSON": (lambda valid: valid + b"shard 3 done\n", "line 5: not JSON"),
}


def _one_line(err: str, prog: str, needle: str) -> None:
    assert err.count("\n") == 1 and err.startswith(f"{prog}: "), err
    assert needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("case", [*MALFORMED, *RAW])
def test_verify_and_merge_answer_a_malformed_manifest_in_one_line_with_status_2(
    dataset: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if case in RAW:
        make, needle = RAW[case]
        data = make((dataset / MANIFEST).read_bytes())
    else:
        data, needle = _malformed_bytes(dataset, case), MALFORMED[case][1]
    (dataset / MANIFEST).write_bytes(data)
    assert main(["verify", str(dataset)]) == 2
    out, err = capsys.readouterr()
    _one_line(err, "ganserve verify", needle)
    assert "ok" not in out
    (dataset / MANIFEST).rename(dataset / worker_manifest(0, 1))
    assert main(["merge", str(dataset)]) == 2
    _one_line(capsys.readouterr().err, "ganserve merge", needle)
    assert not (dataset / MANIFEST).exists()  # nothing merged


@pytest.mark.parametrize(
    "names",
    [
        ["manifest.worker-0000-of-0000.jsonl"],
        ["manifest.worker-0000-of-abc.jsonl"],
        ["manifest.worker-0003-of-0002.jsonl"],
        ["manifest.worker-0000-of-0002.jsonl", "manifest.worker-0001-of-0002.jsonl"],  # empty
    ],
)
def test_merge_answers_bad_worker_manifests_in_one_line_with_status_2(
    dataset: Path, names: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    content = (dataset / MANIFEST).read_bytes() if len(names) == 1 else b""
    (dataset / MANIFEST).unlink()
    for name in names:
        (dataset / name).write_bytes(content)
    assert main(["merge", str(dataset)]) == 2
    _one_line(capsys.readouterr().err, "ganserve merge", names[0] if len(names) == 1 else "empty")
