"""The manifest reader, verify and merge against hand-made and hostile manifests (no server).

The datasets are made with the bulk job's own writer from constant pixels: what is checked is
the manifest's schema and what its records claim, not the images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ganserve.bulk import (
    MANIFEST,
    Dataset,
    Job,
    ManifestError,
    merge,
    npz_bytes,
    read_manifest,
    verify,
    worker_manifest,
)
from ganserve.cli import main
from ganserve.errors import InvalidArgument

DIGITS = tuple(str(i) for i in range(10))


def make_dataset(out: Path, fmt: str = "npz", count: int = 30, shard_size: int = 10) -> Dataset:
    """A finished dataset of a conditional job (ten classes), as the bulk job writes it."""
    job = Job("mnist-cgan", 1, count, 3, fmt, shard_size, True, 10, DIGITS)
    dataset = Dataset(out, job)
    out.mkdir(parents=True)
    records = {}
    for k in range(job.shards):
        _, n = job.span(k)
        records[k] = dataset.write(k, np.full((n, 4, 4, 1), k, np.uint8), job.labels(*job.span(k)))
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


def _edit_record(shard: int, key: str, value: Any) -> Callable[[Path], None]:
    def edit(out: Path) -> None:
        values = lines(out)
        values[1 + shard][key] = value
        write_lines(out / MANIFEST, values)

    return edit


def _edit_header(key: str, value: Any) -> Callable[[Path], None]:
    def edit(out: Path) -> None:
        values = lines(out)
        values[0]["job"][key] = value
        write_lines(out / MANIFEST, values)

    return edit


def _other_labels_in_the_file(out: Path) -> None:
    """Shard 1's npz holds other labels, and its record the new file's checksum."""
    indices = np.arange(10, 20, dtype=np.int64)
    arrays = {"images": np.full((10, 4, 4, 1), 1, np.uint8), "indices": indices}
    arrays["labels"] = np.zeros(10, np.int64)  # the layout says 0, 1, ..., 9
    data = npz_bytes(arrays)
    (out / "shard-00001.npz").write_bytes(data)
    values = lines(out)
    values[2]["sha256"] = hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()
    write_lines(out / MANIFEST, values)


# Each keeps the schema and every checksum, but claims what the job's layout does not give.
EDITS: dict[str, Callable[[Path], None]] = {
    "record count": _edit_record(1, "count", 9),
    "record labels": _edit_record(1, "labels", [2, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
    "record model": _edit_record(1, "model", "mnist-dcgan"),
    "record version": _edit_record(1, "version", 2),
    "record seed": _edit_record(1, "seed", 4),
    "record start_index": _edit_record(1, "start_index", 0),
    "header count 30 -> 20": _edit_header("count", 20),
    "header count 30 -> 25": _edit_header("count", 25),
    "header seed": _edit_header("seed", 4),
    "header shard_size": _edit_header("shard_size", 15),
    "labels in the file": _other_labels_in_the_file,
}


@pytest.mark.parametrize("case", EDITS)
def test_verify_checks_what_each_record_claims_not_only_the_checksums(
    dataset: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    EDITS[case](dataset)
    problems = verify(dataset)
    assert problems and all(p.startswith("shard ") for p in problems), problems
    assert main(["verify", str(dataset)]) == 1
    assert "problem(s)" in capsys.readouterr().out


def test_verify_reads_only_regular_files_inside_the_dataset(tmp_path: Path) -> None:
    """A translation manifest lists its files by name: names that leave the folder are refused
    before anything is read, and files that lead out (links) or never end are not read."""
    secret = tmp_path / "secret"
    secret.write_text("not the dataset's\n")
    out = tmp_path / "a" / "b" / "c" / "ds"
    out.mkdir(parents=True)
    header = {"model": "m", "version": 1, "shard_size": 1, "sources": "0" * 64, "count": 1}

    def listing(name: str, target: Path) -> None:
        digest = hashlib.sha256(hashlib.sha256(target.read_bytes()).digest()).hexdigest()
        record = {"shard": 0, "count": 1, "model": "m", "version": 1, "files": [name]}
        write_lines(out / MANIFEST, [{"job": header}, {**record, "sha256": digest}])

    listing("../../../../secret", secret)
    with pytest.raises(ManifestError, match="files"):
        verify(out)
    assert main(["verify", str(out)]) == 2
    listing(str(secret), secret)  # absolute
    with pytest.raises(ManifestError, match="files"):
        verify(out)
    (out / "link.png").symlink_to(secret)
    listing("link.png", secret)
    assert verify(out) == ["shard 0: link.png: not a regular file inside the dataset folder"]
    (out / "zero.png").symlink_to("/dev/zero")
    listing("zero.png", Path("/dev/null"))  # any checksum: it must not be read
    assert verify(out) == ["shard 0: zero.png: not a regular file inside the dataset folder"]
    os.mkfifo(out / "fifo.png")
    listing("fifo.png", Path("/dev/null"))
    assert verify(out) == ["shard 0: fifo.png: not a regular file inside the dataset folder"]


def test_verify_checks_a_translation_record_against_its_header(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "a.png").write_bytes(b"a translated image")
    header = {"model": "m", "version": 1, "shard_size": 2, "sources": "0" * 64, "count": 1}
    digest = hashlib.sha256(hashlib.sha256(b"a translated image").digest()).hexdigest()
    record = {"shard": 0, "count": 1, "model": "m", "version": 1, "files": ["a.png"]}
    record["sha256"] = digest
    layout = "in the manifest; the job's layout gives"
    for edit, problems in [
        ({}, []),
        ({"model": "n"}, [f"shard 0: model: 'n' {layout} 'm'"]),
        ({"version": 2}, [f"shard 0: version: 2 {layout} 1"]),
        ({"count": 2}, [f"shard 0: count: 2 {layout} 1"]),
        ({"files": ["a.png", "a.png"]}, ["shard 0: files: 2 listed for a count of 1"]),
        (
            {"shard": 1},
            ["shard 0: missing from the manifest", "shard 1: beyond the job's 1 shards"],
        ),
    ]:
        write_lines(out / MANIFEST, [{"job": header}, {**record, **edit}])
        assert verify(out) == problems


# -- any bytes at all: the reader answers or raises ManifestError, never anything else ----------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


EDGES = [2**63, 2**64 - 1, 2**64, 2**64 + 1]


@st.composite
def manifests(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid manifest edited: fields changed, dropped or added, lines cut or swapped, bytes
    flipped; or any bytes at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    values = [json.loads(line) for line in valid.decode().splitlines()]
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(0, len(values) - 1))
        target = values[k]
        if isinstance(target, dict) and isinstance(target.get("job"), dict):
            target = target["job"]
        action = draw(st.sampled_from(["set", "drop", "add", "line", "swap"]))
        if action in ("set", "drop") and isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            if action == "drop":
                del target[key]
            elif type(target[key]) is int and draw(st.booleans()):  # in the schema, mostly
                target[key] = draw(st.one_of(st.integers(-1, 40), st.sampled_from(EDGES)))
            else:
                target[key] = draw(st.one_of(JSON, st.integers(-(2**70), 2**70)))
        elif action == "add" and isinstance(target, dict):
            target[draw(st.text(max_size=8))] = draw(JSON)
        elif action == "line":
            values[k] = draw(JSON)
        else:
            j = draw(st.integers(0, len(values) - 1))
            values[k], values[j] = values[j], values[k]
    data = "".join(json.dumps(v) + "\n" for v in values).encode()
    if draw(st.booleans()):  # a cut (a kill mid-line) or a flipped byte
        at = draw(st.integers(0, len(data)))
        data = data[:at] if draw(st.booleans()) else data[:at] + draw(st.binary(max_size=3))
    return data


@pytest.fixture(scope="module", params=["npz", "png"])
def valid(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, bytes]:
    """A finished dataset folder, and its manifest, which the property test replaces."""
    out = tmp_path_factory.mktemp(request.param) / "ds"
    make_dataset(out, fmt=request.param, count=12, shard_size=5)
    return out, (out / MANIFEST).read_bytes()


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_bytes_as_a_manifest_give_an_answer_or_a_manifest_error(
    valid: tuple[Path, bytes], data: st.DataObject
) -> None:
    out, good = valid
    manifest = data.draw(manifests(good))
    (out / MANIFEST).write_bytes(manifest)
    try:
        header, records = read_manifest(out / MANIFEST)
    except ManifestError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(MANIFEST)
    else:
        assert isinstance(header, dict) and all(isinstance(k, int) for k in records)
    try:
        problems = verify(out)
    except ManifestError:
        pass
    else:
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
        if manifest == good:
            assert problems == []
    (out / MANIFEST).unlink()
    (out / worker_manifest(0, 1)).write_bytes(manifest)
    try:
        summary = merge(out)
    except (InvalidArgument, ManifestError) as exc:  # a worker missing, or one unreadable
        assert "\n" not in str(exc)
        (out / worker_manifest(0, 1)).unlink()
    else:
        assert summary["shards"] == 3 and verify(out) == []
    (out / MANIFEST).write_bytes(good)  # as it was, for the next example
