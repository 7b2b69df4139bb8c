"""Bulk jobs against real servers: resumable, verifiable, never losing or repeating an image."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ganserve.async_client import AsyncClient
from ganserve.bulk import (
    MANIFEST,
    FolderLock,
    Manifest,
    merge,
    run_job,
    run_translate_job,
    verify,
    worker_manifest,
)
from ganserve.cli import main
from ganserve.errors import FolderLocked, InvalidArgument, JobError, UnexpectedReply
from ganserve.png import encode_png
from ganserve.types import Images
from tests.servers import CGAN, DCGAN, MODELS, PIX2PIX, RunningServer


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def tree(folder: Path) -> dict[str, str]:
    """Every entry under `folder`, hidden ones and empty folders too: path -> sha256 or "dir"."""

    def entry(p: Path) -> str:
        return "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()

    return {str(p.relative_to(folder)): entry(p) for p in sorted(folder.rglob("*"))}


def one_line(err: str, prog: str, *needles: str) -> None:
    """`err` is one line from `prog` naming the problem, not a traceback."""
    assert err.count("\n") == 1 and err.startswith(f"{prog}: "), err
    assert all(needle in err for needle in needles), err


def job(server: RunningServer, out: Path, model: str = CGAN, **kwargs: object) -> dict:
    options = {"count": 600, "shard_size": 100, "seed": 3, "quiet": True, **kwargs}
    return asyncio.run(run_job([server.address], model, out, **options))  # type: ignore[arg-type]


def test_npz_dataset_with_manifest_verify_and_repair(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert job(server, out)["shards"] == 6
    with np.load(out / "shard-00002.npz") as shard:
        assert shard["images"].shape == (100, 32, 32, 1) and shard["images"].dtype == np.uint8
        assert shard["indices"].tolist() == list(range(200, 300))
        assert shard["labels"].tolist() == [i % 10 for i in range(200, 300)]
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert records[0]["job"]["model"] == CGAN and [r["shard"] for r in records[1:]] == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    assert records[1]["labels"] == [10] * 10 and records[1]["version"] == 1
    assert verify(out) == []
    before = checksums(out)
    job(server, out)  # nothing to do: the same bytes
    assert checksums(out) == before
    (out / "shard-00004.npz").write_bytes(b"damaged")
    (out / "shard-00001.npz").unlink()
    assert len(verify(out)) == 2
    assert main(["verify", str(out)]) == 1
    job(server, out)  # redoes exactly the two damaged shards
    assert checksums(out) == before and verify(out) == []


def test_two_jobs_into_one_folder_one_is_refused_the_other_finishes(
    server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    options = {"count": 300, "shard_size": 50, "seed": 3, "quiet": True}

    async def both() -> list[object]:
        return await asyncio.gather(
            run_job([server.address], CGAN, out, **options),  # type: ignore[arg-type]
            run_job([server.address], CGAN, out, **options),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    # Either may take the folder first: each describes the model before it takes it.
    done, refused = sorted(asyncio.run(both()), key=lambda r: not isinstance(r, dict))
    assert isinstance(done, dict) and done["images"] == 300
    assert isinstance(refused, FolderLocked) and "another job is writing" in str(refused)
    assert isinstance(refused, JobError) and not isinstance(refused, InvalidArgument)
    assert verify(out) == []
    assert job(server, out, count=300, shard_size=50)["images"] == 300  # the folder is free again


def test_png_layout_is_one_folder_per_class(server: RunningServer, tmp_path: Path) -> None:
    job(server, tmp_path / "png", fmt="png", count=None, per_class=3, shard_size=7)
    folders = sorted(p.name for p in (tmp_path / "png").iterdir() if p.is_dir())
    assert folders == [str(i) for i in range(10)]
    assert sorted(p.name for p in (tmp_path / "png" / "3").iterdir()) == [
        "00000003.png",
        "00000013.png",
        "00000023.png",
    ]
    job(server, tmp_path / "plain", fmt="png", model=DCGAN, count=5)
    assert len(list((tmp_path / "plain" / "images").iterdir())) == 5


def test_bad_arguments_and_wrong_model_kind(server: RunningServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="unconditional"):
        job(server, tmp_path / "a", model=DCGAN, count=None, per_class=5)
    with pytest.raises(InvalidArgument, match="format"):
        job(server, tmp_path / "b", fmt="tiff")
    job(server, tmp_path / "c", count=100)
    with pytest.raises(InvalidArgument, match="different job"):
        job(server, tmp_path / "c", count=200)  # same folder, other job: refused
    assert (
        main(
            [
                "generate",
                "--server",
                server.address,
                "--model",
                "nope",
                "--count",
                "1",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("fmt", ["npz", "webdataset", "parquet"])
def test_a_job_killed_with_sigkill_resumes_to_the_same_bytes(
    server: RunningServer, tmp_path: Path, fmt: str
) -> None:
    args = [
        "generate",
        "--format",
        fmt,
        "--server",
        server.address,
        "--model",
        CGAN,
        "--count",
        "6000",
        "--shard-size",
        "100",
        "--streams",
        "1",
        "--seed",
        "9",
        "--quiet",
    ]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ganserve.cli", *args, "--out", str(out)]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while not (manifest.exists() and manifest.read_text().count("\n") >= 4):
        assert time.monotonic() < deadline and process.poll() is None, "job never got going"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert verify(out), "the kill came too late to test anything"
    assert main([*args, "--out", str(out)]) == 0
    assert checksums(out) == checksums(tmp_path / "straight")


def test_a_job_outlives_a_server_restart(make_server: Callable, tmp_path: Path) -> None:
    first = make_server()
    port = first.server.port
    straight = tmp_path / "straight"
    job(first, straight, count=3000, streams=1)
    out = tmp_path / "restarted"
    manifest = out / "manifest.jsonl"

    def restart_midway() -> None:
        deadline = time.monotonic() + 60
        while not (manifest.exists() and manifest.read_text().count("\n") >= 3):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        first.stop(grace=0)
        time.sleep(1.0)
        make_server(port=port)

    restarter = threading.Thread(target=restart_midway)
    restarter.start()
    job(first, out, count=3000, streams=1)
    restarter.join()
    assert verify(out) == []
    assert checksums(out) == checksums(straight)


def test_bulk_translation_of_a_folder_resumes_to_the_same_bytes(
    server: RunningServer, tmp_path: Path
) -> None:
    from ganserve.bulk import run_translate_job
    from ganserve.png import encode_png

    rng = np.random.default_rng(0)
    source = tmp_path / "edges"
    for i in range(23):
        size = (64, 32) if i % 5 == 0 else (32, 32)  # two sizes: separate calls, one shard
        folder = source / ("a" if i < 12 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image = ((rng.random((*size, 1)) > 0.85) * 255).astype(np.uint8)
        (folder / f"{i:03d}.png").write_bytes(encode_png(image))

    def translate(out: Path, model: str = "mnist-edges2digits") -> dict:
        return asyncio.run(
            run_translate_job([server.address], model, source, out, shard_size=5, quiet=True)
        )

    assert translate(tmp_path / "straight")["images"] == 23
    straight = checksums(tmp_path / "straight")
    assert len([n for n in straight if n.endswith(".png")]) == 23
    assert "b/022.png" in straight
    out = tmp_path / "again"
    translate(out)
    (out / "a" / "003.png").unlink()  # as if the job had died before this file
    translate(out)
    assert checksums(out) == straight
    assert verify(out) == []
    (out / "b" / "020.png").write_bytes(b"damaged")
    assert verify(out) == ["shard 4: files missing or not matching the manifest"]
    with pytest.raises(InvalidArgument, match="use `ganserve generate`"):
        translate(tmp_path / "wrong", model=DCGAN)


def test_bulk_inpainting_takes_a_mask_per_source_and_a_resume_the_same_masks(
    server: RunningServer, tmp_path: Path
) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    source, masks = tmp_path / "digits", tmp_path / "holes"
    for i in range(7):
        for folder in (source / "x", masks / "x"):
            folder.mkdir(parents=True, exist_ok=True)
        image = np.zeros((32, 32, 1), np.uint8)
        image[6:26, 13:19] = 255
        hole = np.zeros((32, 32, 1), np.uint8)
        top = int(rng.integers(4, 16))
        hole[top : top + 10, 8:20] = 255
        (source / "x" / f"{i}.png").write_bytes(encode_png(image))
        (masks / "x" / f"{i}.png").write_bytes(encode_png(hole))

    def inpaint(out: Path, holes: Path | None = masks, model: str = "mnist-inpaint") -> dict:
        return asyncio.run(run_translate_job(
            [server.address], model, source, out, shard_size=3, quiet=True, masks=holes
        ))  # fmt: skip

    out = tmp_path / "filled"
    assert inpaint(out)["images"] == 7
    whole = checksums(out)
    for i in range(7):
        with Image.open(out / "x" / f"{i}.png") as im, Image.open(source / "x" / f"{i}.png") as src:
            filled, original = np.asarray(im), np.asarray(src)
        with Image.open(masks / "x" / f"{i}.png") as m:
            keep = np.asarray(m) == 0
        assert np.array_equal(filled[keep], original[keep]) and not np.array_equal(filled, original)
    (out / "x" / "4.png").unlink()  # as if the job had died before this file
    inpaint(out)
    assert checksums(out) == whole and verify(out) == []
    (masks / "x" / "2.png").write_bytes(encode_png(np.zeros((32, 32, 1), np.uint8)))
    with pytest.raises(InvalidArgument, match=r"holds a different job .*masks"):
        inpaint(out)  # other masks: another job, refused untouched
    assert checksums(out) == whole
    with pytest.raises(InvalidArgument, match="fills holes: give --mask-dir"):
        inpaint(tmp_path / "none", holes=None)
    with pytest.raises(InvalidArgument, match="fills no holes"):
        inpaint(tmp_path / "pix2pix", model="mnist-edges2digits")
    (masks / "x" / "6.png").unlink()
    with pytest.raises(InvalidArgument, match=r"masks: no mask .*6\.png for source"):
        inpaint(tmp_path / "short")


@pytest.mark.parametrize("fmt", ["npz", "png", "webdataset", "parquet"])
def test_three_worker_processes_then_merge_equal_one_worker_byte_for_byte(
    server: RunningServer, tmp_path: Path, fmt: str
) -> None:
    one, three = tmp_path / "one", tmp_path / "three"
    job(server, one, count=1000, fmt=fmt)
    argv = [
        *(sys.executable, "-m", "ganserve.cli", "generate", "--model", CGAN, "--count", "1000"),
        *("--shard-size", "100", "--seed", "3", "--format", fmt, "--server", server.address),
        *("--out", str(three), "--workers", "3"),
    ]
    workers = [
        subprocess.Popen(argv, env={**os.environ, "JOB_COMPLETION_INDEX": str(i)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]  # fmt: skip
    results = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], results
    made = sorted(json.loads(out)["made_shards"] for out, _ in results)
    assert made == [3, 3, 4]  # shards k with k % 3 == index, no coordination
    assert "worker 2/3: " in results[1][1]  # per-worker progress, as log lines off a terminal
    assert main(["verify", str(three)]) == 1  # not merged yet: no manifest.jsonl
    assert main(["merge", str(three)]) == 0
    assert checksums(three) == checksums(one)  # the manifest too
    assert main(["verify", str(three)]) == 0


def test_merge_refuses_a_job_whose_workers_have_not_all_finished(
    server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    job(server, out, count=600, worker_index=0, workers=2)
    with pytest.raises(InvalidArgument, match=r"worker\(s\) \[1\] of 2"):
        merge(out)
    job(server, out, count=600, worker_index=1, workers=2)
    (out / "shard-00003.npz").unlink()  # worker 1's
    with pytest.raises(InvalidArgument, match="run that shard's worker again"):
        merge(out)
    job(server, out, count=600, worker_index=1, workers=2)  # resumes: remakes shard 3 only
    with FolderLock(out, worker_manifest(1, 2)):  # a worker still holds the folder
        with pytest.raises(FolderLocked, match="writing"):
            merge(out)
        assert main(["merge", str(out)]) == 1  # not ready: the documented status
    assert merge(out)["shards"] == 6 and verify(out) == []


def _users_folder(out: Path) -> None:
    """A folder of the user's files, named as a job names its own."""
    (out / "images").mkdir(parents=True)
    (out / MANIFEST).write_text('{"file": "cat.png", "label": "cat"}\n')  # another tool's
    (out / "images" / "00000000.png").write_bytes(b"the user's picture")
    (out / "shard-00000.npz").write_bytes(b"the user's arrays")
    (out / "notes.txt").write_text("the user's notes\n")


def test_a_job_refuses_a_folder_it_did_not_make_and_touches_nothing(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "users"
    _users_folder(out)
    before = tree(out)
    generate = ["generate", "--server", server.address, "--count", "5", "--quiet"]
    for flags in (
        ["--model", DCGAN, "--format", "png"],
        ["--model", CGAN, "--format", "npz"],
        ["--model", CGAN, "--workers", "2", "--worker-index", "1"],
    ):
        assert main([*generate, *flags, "--out", str(out)]) == 2
        one_line(capsys.readouterr().err, "ganserve generate", str(out / MANIFEST))
        assert tree(out) == before
    source = tmp_path / "edges"
    source.mkdir()
    (source / "0.png").write_bytes(encode_png(np.zeros((32, 32, 1), np.uint8)))
    translate = ["translate", "--server", server.address, "--model", PIX2PIX, "--quiet"]
    assert main([*translate, "--input", str(source), "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "ganserve translate", str(out / MANIFEST))
    (out / MANIFEST).unlink()  # no manifest at all: still the user's folder
    before = tree(out)
    assert main([*generate, "--model", DCGAN, "--format", "png", "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "ganserve generate", "not empty", "no manifest")
    assert main([*translate, "--input", str(source), "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "ganserve translate", "not empty", "no manifest")
    assert tree(out) == before


def test_a_job_resumes_in_its_own_folder_with_what_a_kill_leaves(
    server: RunningServer, tmp_path: Path
) -> None:
    straight, out = tmp_path / "straight", tmp_path / "killed"
    options = {"count": 300, "fmt": "png", "per_class": None}
    job(server, straight, **options)
    job(server, out, **options)
    # As a kill leaves it: the header, one record, a torn one; temporaries of unfinished shards
    manifest = (out / MANIFEST).read_text().splitlines(keepends=True)
    (out / MANIFEST).write_text("".join(manifest[:2]) + manifest[2][:40])
    (out / ".manifest.jsonl.tmp").write_text("half a manifest")
    for name in ("3/00000123.png", "5/00000205.png"):
        (out / name).unlink()
        (out / name).with_name(f".{Path(name).name}.tmp").write_bytes(b"half a png")
    (out / "notes.txt").write_text("the user's notes on the dataset\n")  # beside a manifest
    job(server, out, **options)
    (out / "notes.txt").unlink()
    assert tree(out) == tree(straight) and verify(out) == []


def _hostile_repository(root: Path, class_names: list[str]) -> Path:
    """A repository serving the shipped cgan as `evil`, its card naming `class_names`."""
    import onnx

    model = onnx.load(MODELS / CGAN / "1" / "model.onnx")
    for prop in model.metadata_props:
        if prop.key == "ganserve.class_names":
            prop.value = json.dumps(class_names)
    (root / "evil" / "1").mkdir(parents=True)
    onnx.save(model, root / "evil" / "1" / "model.onnx")
    return root


def test_class_names_from_the_server_never_become_paths(
    make_server: Callable, tmp_path: Path
) -> None:
    escaped = tmp_path / "escaped-absolute"
    names = ["../../escaped-relative", str(escaped), "..", ".", "", "a/b", "Seven", "seven"]
    names += ["NUL", "nine 9"]  # a Windows device name, and a safe name
    server = make_server(model_repository=_hostile_repository(tmp_path / "repo", names))
    out = tmp_path / "work" / "deep" / "out"
    before = set(tmp_path.rglob("*"))
    argv = ["generate", "--server", server.address, "--model", "evil", "--per-class", "2"]
    assert main([*argv, "--format", "png", "--out", str(out), "--quiet"]) == 0
    made = set(tmp_path.rglob("*")) - before
    assert made and all(p in out.parents or p == out or out in p.parents for p in made), sorted(
        str(p) for p in made if out not in p.parents
    )
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [f"_{label}" for label in range(9)] + ["nine 9"]
    assert sorted(p.name for p in (out / "_0").iterdir()) == ["00000000.png", "00000010.png"]
    assert verify(out) == []


GENERATE = ["generate", "--model", CGAN, "--count", "5", "--quiet"]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--seed", "-1"], "seed: -1"),
        (["--seed", str(2**64)], f"seed: {2**64}"),
        (["--shard-size", "0"], "shard_size"),
        (["--workers", "2", "--worker-index", "2"], "worker_index"),
    ],
)
def test_bad_job_flags_are_one_line_and_leave_no_folder(
    server: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    needle: str,
) -> None:
    out = tmp_path / "ds"
    assert main([*GENERATE, "--server", server.address, *flags, "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "ganserve generate", needle)
    assert not out.exists()


def test_an_out_that_is_a_file_or_cannot_be_made_is_one_line(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("the user's\n")
    source = tmp_path / "edges"
    source.mkdir()
    (source / "0.png").write_bytes(encode_png(np.zeros((32, 32, 1), np.uint8)))
    translate = ["translate", "--model", PIX2PIX, "--input", str(source), "--quiet"]
    for out in (file, file / "ds"):
        for argv, prog in ((GENERATE, "ganserve generate"), (translate, "ganserve translate")):
            assert main([*argv, "--server", server.address, "--out", str(out)]) == 2
            one_line(capsys.readouterr().err, prog, "out: ", str(out))
    assert file.read_text() == "the user's\n"


def test_a_worker_holds_its_lock_while_its_manifest_is_replaced(tmp_path: Path) -> None:
    out, mine = tmp_path / "ds", worker_manifest(0, 2)
    with FolderLock(out, mine):
        Manifest(out, {"model": "m"}, mine).finish({})  # a new file (inode) under the name
        with pytest.raises(FolderLocked, match="as this worker"), FolderLock(out, mine):
            pass
        with FolderLock(out, worker_manifest(1, 2)):  # the other worker shares the folder
            pass
    with FolderLock(out, mine):  # free again
        pass


def test_two_processes_of_one_worker_one_is_refused(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    argv = [
        *("generate", "--server", server.address, "--model", CGAN, "--count", "20000"),
        *("--shard-size", "100", "--streams", "1", "--quiet", "--out", str(out)),
        *("--workers", "2", "--worker-index", "0"),
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "ganserve.cli", *argv],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest = out / worker_manifest(0, 2)
    deadline = time.monotonic() + 120
    while not (manifest.exists() and manifest.read_text().count("\n") >= 2):
        assert time.monotonic() < deadline and first.poll() is None, "the worker never got going"
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # it holds its locks, whatever the machine's speed
    try:
        assert main(argv) == 2
        one_line(capsys.readouterr().err, "ganserve generate", "another job", "as this worker")
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(300) == 0, first.stderr.read() if first.stderr else ""
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no lock file left


def test_a_source_that_is_not_a_png_is_named_and_nothing_is_written(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "edges", tmp_path / "digits"
    source.mkdir()
    good = encode_png(np.zeros((32, 32, 1), np.uint8))
    (source / "0.png").write_bytes(good)
    (source / "1.png").write_bytes(good[:8] + good[33:])  # no IHDR: once sized from bytes 16-24
    argv = ["translate", "--server", server.address, "--model", PIX2PIX, "--quiet"]
    assert main([*argv, "--input", str(source), "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "ganserve translate", str(source / "1.png"), "not IHDR")
    assert not any(p.suffix == ".png" for p in out.rglob("*"))


def test_a_job_completion_index_that_is_not_a_number_is_one_line(
    server: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "abc")  # once a traceback building the parser
    with pytest.raises(SystemExit) as info:
        main([*GENERATE, "--server", server.address, "--out", str(tmp_path / "ds")])
    assert info.value.code == 2 and "JOB_COMPLETION_INDEX: 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def _replies_changed(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[Images], Images], method: str
) -> None:
    """Every batch the job's client streams goes through `change`, as a faulty server's would."""
    original = getattr(AsyncClient, method)

    def patched(self: AsyncClient, *args: object, **kwargs: object) -> AsyncIterator[Images]:
        async def changed() -> AsyncIterator[Images]:
            async for batch in original(self, *args, **kwargs):
                yield change(batch)

        return changed()

    monkeypatch.setattr(AsyncClient, method, patched)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda b: replace(b, labels=(b.labels + 1) % 10), "labels"),  # another class each
        (lambda b: replace(b, labels=None), "labels none"),  # no labels at all
        (lambda b: replace(b, labels=b.labels[:-1], pixels=b.pixels[:-1]), "images for"),
        (lambda b: replace(b, start_index=b.start_index + 1), "from index"),
    ],
)
def test_a_reply_other_than_the_job_asked_for_is_a_job_error_and_nothing_is_written(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[Images], Images],
    needle: str,
) -> None:
    out = tmp_path / "ds"
    _replies_changed(monkeypatch, change, "generate_stream")
    with pytest.raises(UnexpectedReply, match=needle) as info:
        job(server, out, count=20, shard_size=10, streams=1, fmt="png")
    assert isinstance(info.value, JobError) and "shard 0" in str(info.value)
    assert not list(out.rglob("*.png"))  # nothing of the reply was written
    assert len((out / MANIFEST).read_text().splitlines()) == 1  # the header, no record
    argv = [*GENERATE, "--server", server.address, "--out", str(tmp_path / "cli")]
    assert main(argv) == 2
    one_line(capsys.readouterr().err, "ganserve generate", needle)


def test_labels_from_an_unconditional_model_are_a_job_error(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = lambda b: replace(b, labels=np.zeros(len(b), np.int64))  # noqa: E731
    _replies_changed(monkeypatch, labels, "sample_stream")
    with pytest.raises(UnexpectedReply, match="unconditional"):
        job(server, tmp_path / "ds", model=DCGAN, count=10)
