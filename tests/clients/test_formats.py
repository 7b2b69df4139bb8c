"""The streaming formats (`webdataset`, `parquet`) read back by their own libraries, equal to
an npz job of the same seed, with the bulk guarantees: verify, resume, the dataset card."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from ganserve.bulk import MANIFEST, run_job, verify
from ganserve.bulk.files import combined
from tests.clients.test_bulk import tree
from tests.servers import CGAN, DCGAN, RunningServer

COUNT, SHARD, SEED = 250, 100, 3


def make(server: RunningServer, out: Path, fmt: str, model: str = CGAN, **kw: object) -> None:
    options = {"count": COUNT, "shard_size": SHARD, "seed": SEED, "quiet": True, **kw}
    asyncio.run(run_job([server.address], model, out, fmt=fmt, **options))  # type: ignore[arg-type]


def npz_images(out: Path) -> tuple[np.ndarray, np.ndarray | None]:
    pixels, labels = [], []
    for path in sorted(out.glob("shard-*.npz")):
        with np.load(path) as shard:
            pixels.append(shard["images"])
            if "labels" in shard:
                labels.append(shard["labels"])
    return np.concatenate(pixels), np.concatenate(labels) if labels else None


@pytest.fixture(scope="module")
def made(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    for fmt in ("npz", "webdataset", "parquet"):
        make(server, root / fmt, fmt)
    return root


def test_webdataset_shards_read_by_webdataset_and_wids_equal_npz(made: Path) -> None:
    import webdataset as wds
    import wids

    want, labels = npz_images(made / "npz")
    out = made / "webdataset"
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shard-00000{k}.tar" for k in range(3)]
    urls = str(out / "shard-{000000..000002}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("l8"))
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(COUNT)]
    assert np.array_equal(np.stack([s["png"] for s in samples])[..., None], want)
    assert [s["cls"] for s in samples] == labels.tolist()
    assert samples[137]["json"] == {
        "seed": SEED,
        "index": 137,
        "label": 7,
        "class_name": "7",
        "model": CGAN,
        "version": 1,
    }
    index = json.loads((out / "index.json").read_text())
    assert index["wids_version"] == 1
    assert index["shardlist"] == [
        {"url": f"shard-00000{k}.tar", "nsamples": n} for k, n in enumerate([100, 100, 50])
    ]
    random_access = wids.ShardListDataset(str(out / "index.json"), cache_dir=str(made / "cache"))
    assert len(random_access) == COUNT
    sample = random_access[137]
    assert np.array_equal(np.asarray(sample[".png"])[..., None], want[137])
    assert sample[".cls"] == 7


def test_parquet_shards_read_by_datasets_with_named_labels_equal_npz(made: Path) -> None:
    import datasets
    import pyarrow.parquet as pq

    want, labels = npz_images(made / "npz")
    out = made / "parquet"
    names = sorted(str(p.relative_to(out)) for p in (out / "data").iterdir())
    assert names == [f"data/train-0000{k}-of-00003.parquet" for k in range(3)]
    for source in ({"path": "parquet", "data_dir": str(out / "data")}, {"path": str(out)}):
        data = datasets.load_dataset(**source, split="train", cache_dir=str(made / "hf"))
        assert data.features["label"].names == [str(c) for c in range(10)]
        assert isinstance(data.features["image"], datasets.Image)
        assert data["label"] == labels.tolist() and data["index"] == list(range(COUNT))
        pixels = np.stack([np.asarray(image) for image in data["image"]])[..., None]
        assert np.array_equal(pixels, want)
    table = pq.read_table(out / names[1])
    assert table.column_names == ["image", "index", "label"] and table.num_rows == 100


def test_every_dataset_has_a_card_the_hub_reads(made: Path) -> None:
    for fmt in ("npz", "webdataset", "parquet"):
        text = (made / fmt / "README.md").read_text()
        _, header, body = text.split("---\n", 2)
        card = yaml.safe_load(header)
        assert card["license"] == "apache-2.0" and card["size_categories"] == ["n<1K"]
        assert card["task_categories"] == ["image-classification"]
        assert f"--count {COUNT} --seed {SEED} --format {fmt} --shard-size {SHARD}" in body
        assert "| 7 | 7 | 25 |" in body  # images per class
        assert "| independent.class_accuracy |" in body  # the model card's evaluation
        if fmt == "parquet":
            (label,) = [f for f in card["dataset_info"]["features"] if f["name"] == "label"]
            assert label["dtype"]["class_label"]["names"]["3"] == "3"
        assert verify(made / fmt) == []


def test_an_unconditional_model_has_no_label(server: RunningServer, tmp_path: Path) -> None:
    import webdataset as wds

    for fmt in ("npz", "webdataset", "parquet"):
        make(server, tmp_path / fmt, fmt, model=DCGAN, count=30, shard_size=20)
    want, none = npz_images(tmp_path / "npz")
    assert none is None
    urls = str(tmp_path / "webdataset" / "shard-{000000..000001}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("l8"))
    assert sorted(samples[0]) == ["__key__", "__local_path__", "__url__", "json", "png"]
    assert np.array_equal(np.stack([s["png"] for s in samples])[..., None], want)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "parquet" / "data")
    assert table.column_names == ["image", "index"]
    card = yaml.safe_load((tmp_path / "parquet" / "README.md").read_text().split("---\n")[1])
    assert card["task_categories"] == ["unconditional-image-generation"]


@pytest.mark.parametrize(
    ("fmt", "shard"),
    [("webdataset", "shard-000001.tar"), ("parquet", "data/train-00001-of-00003.parquet")],
)
def test_a_job_resumes_to_the_same_bytes_from_what_a_kill_leaves(
    server: RunningServer, made: Path, tmp_path: Path, fmt: str, shard: str
) -> None:
    out = tmp_path / fmt
    make(server, out, fmt)
    lines = (out / MANIFEST).read_text().splitlines(keepends=True)
    (out / MANIFEST).write_text("".join(lines[:2]) + lines[3][:30])  # shard 0, a torn record
    (out / shard).unlink()
    (out / shard).with_name(f".{Path(shard).name}.tmp").write_bytes(b"half a shard")
    (out / "index.json").unlink(missing_ok=True)
    assert verify(out)
    make(server, out, fmt)
    assert tree(out) == tree(made / fmt) and verify(out) == []


def test_verify_checks_what_a_shard_holds_not_only_its_checksum(made: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(made / "webdataset", out)
    (out / "shard-000000.tar").write_bytes(b"damaged")
    assert verify(out) == ["shard 0: files missing or not matching the manifest"]
    # A shard whose record was rewritten to match other samples: the checksum agrees, the
    # layout does not (shard 1's samples under shard 0's name).
    with tarfile.open(out / "shard-000001.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    (out / "shard-000000.tar").write_bytes(buffer.getvalue())
    import hashlib

    lines = (out / MANIFEST).read_text().splitlines()
    record = json.loads(lines[1])
    record["sha256"] = combined([hashlib.sha256(buffer.getvalue()).digest()])
    lines[1] = json.dumps(record, sort_keys=True)
    (out / MANIFEST).write_text("\n".join(lines) + "\n")
    (problem,) = verify(out)
    assert problem.startswith("shard 0: shard-000000.tar: member 0 is not the job's"), problem
    (out / "index.json").write_text("{}")
    assert "index.json: missing or not the job's wids index" in verify(out)


def test_a_url_of_an_unknown_storage_is_refused_never_taken_for_a_folder(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ganserve.cli import main

    monkeypatch.chdir(tmp_path)  # where a folder `nosuch:` would appear
    generate = ["generate", "--server", server.address, "--model", CGAN, "--count", "5"]
    assert main([*generate, "--out", "nosuch://bucket/digits", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganserve generate: out: nosuch://bucket/digits: nosuch:// is not"), err
    assert err.count("\n") == 1
    for command in ("verify", "merge"):
        assert main([command, "nosuch://bucket/digits"]) == 2
        err = capsys.readouterr().err
        assert "nosuch:// is not a storage fsspec knows" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_a_tar_shard_has_the_bytes_tarfile_writes(conditional: bool, n: int) -> None:
    # formats writes ustar headers itself (tarfile.addfile was most of a shard's cost): the
    # same bytes as tarfile's, so shards made before it resume and merge unchanged
    from ganserve.bulk import Job, formats

    names = tuple(f"c{i}" for i in range(10)) if conditional else ()
    job = Job("m", 1, 1000, 3, "webdataset", 300, conditional, len(names), names)
    pixels = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
    labels = np.arange(n) % 10 if conditional else None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for j, image in enumerate(pixels):
            label = None if labels is None else int(labels[j])
            blobs = [formats.encode_png(image), *([str(label).encode()] if conditional else [])]
            blobs.append(formats._sample_json(job, 500 + j, label))
            for name, blob in zip(formats._members(job, 500 + j, label), blobs, strict=True):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(blob), 0o644, 0
                tar.addfile(info, io.BytesIO(blob))
    assert formats.tar_bytes(job, 500, pixels, labels) == buffer.getvalue()
