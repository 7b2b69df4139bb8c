"""The shard formats training pipelines stream, beside npz and png: WebDataset tars and
Hugging Face Parquet files, their checks, the wids index and the dataset card.

`webdataset`: shard k is `shard-{k:06d}.tar`, a POSIX (ustar) tar whose samples are adjacent
members `{key}.png`, `{key}.cls` (conditional models: the label as decimal text) and
`{key}.json` (seed, index, label, class_name, model, version), the key being the image's index
as 8 or more digits. `webdataset.WebDataset` reads the shards unchanged, and `index.json` (the
wids descriptor: `wids_version` 1 and a `shardlist` of `{url, nsamples}`, urls relative to the
folder) gives `wids.ShardListDataset` random access; it is written once every shard is done.

`parquet`: shard k is `data/train-{k:05d}-of-{shards:05d}.parquet`, one row group with the
columns `image` (the `datasets` Image encoding: a struct of PNG `bytes` and a `path`),
`index` (int64) and, for conditional models, `label` (int64); the schema's `huggingface`
metadata declares `label` a ClassLabel with the model card's class names, so
`datasets.load_dataset("parquet", data_dir=...)` (or of the folder) gives named labels.
Writing it needs pyarrow (`pip install 'ganserve[datasets]'`); nothing else does.

The bytes of every shard depend on the images and the job alone (fixed tar headers, one
pyarrow writer), so a resumed or distributed job repeats them exactly.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ganserve.contract import balanced_counts
from ganserve.errors import InvalidArgument
from ganserve.png import encode_png

if TYPE_CHECKING:
    from ganserve.bulk.layout import Job

WIDS_INDEX = "index.json"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CARD = "README.md"
_SIZE_CATEGORIES = [  # the Hugging Face Hub's size_categories, by upper bound
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]


def sample_key(index: int) -> str:
    """A WebDataset sample's key: the index as 8 or more digits (no dot: webdataset splits the
    key from the extension at the first one)."""
    return f"{index:08d}"


def tar_name(shard: int) -> str:
    return f"shard-{shard:06d}.tar"


def parquet_name(shard: int, shards: int) -> str:
    return f"data/train-{shard:05d}-of-{shards:05d}.parquet"


def _sample_json(job: Job, index: int, label: int | None) -> bytes:
    value = {
        "seed": job.seed,
        "index": index,
        "label": label,
        "class_name": None if label is None else job.class_names[label],
        "model": job.model,
        "version": job.version,
        **({"truncation": job.truncation} if job.truncation else {}),
    }
    return json.dumps(value, sort_keys=True).encode()


def _members(job: Job, index: int, label: int | None) -> list[str]:
    key = sample_key(index)
    return [f"{key}.png", *([f"{key}.cls"] if label is not None else []), f"{key}.json"]


def _ustar_header(name: str, size: int) -> bytes:
    """The 512-byte POSIX ustar header of a regular file `name` of `size` bytes with mode 0644,
    owner 0 and mtime 0: the bytes `tarfile` writes for that TarInfo (tested; no device
    numbers, as it writes none for a regular file), built here because `tarfile.addfile` cost
    three times the PNG encoding of a shard (180 of 245 ms for 1,000 samples, measured)."""
    raw = name.encode()
    if len(raw) > 100:  # the keys are 8 digits: never, but never a silently cut name
        raise ValueError(f"tar member name over 100 bytes: {name!r}")
    header = b"".join(
        (
            raw.ljust(100, b"\0"),
            b"0000644\0",  # mode
            b"0000000\0",  # uid
            b"0000000\0",  # gid
            b"%011o\0" % size,
            b"00000000000\0",  # mtime
            b" " * 8,  # the checksum, counted as spaces
            b"0",  # a regular file
            b"\0" * 100,  # linkname
            b"ustar\x0000",
            b"\0" * (64 + 16 + 167),  # uname, gname, devmajor, devminor, prefix, padding
        )
    )
    checksum = b"%06o\0" % sum(header)
    return header[:148] + checksum + header[155:]


def tar_bytes(job: Job, start: int, pixels: np.ndarray, labels: np.ndarray | None) -> bytes:
    """A WebDataset shard of images [start, start + len(pixels)): a POSIX ustar archive with
    fixed headers (mtime 0, owner 0, mode 0644), so its bytes depend on the images alone."""
    parts: list[bytes] = []
    for j, image in enumerate(pixels):
        label = None if labels is None else int(labels[j])
        data = [encode_png(image)]
        if label is not None:
            data.append(str(label).encode())
        data.append(_sample_json(job, start + j, label))
        for name, blob in zip(_members(job, start + j, label), data, strict=True):
            padding = b"\0" * (-len(blob) % tarfile.BLOCKSIZE)
            parts += (_ustar_header(name, len(blob)), blob, padding)
    size = sum(map(len, parts)) + 2 * tarfile.BLOCKSIZE  # the end: two zero blocks
    parts.append(b"\0" * (2 * tarfile.BLOCKSIZE + -size % tarfile.RECORDSIZE))
    return b"".join(parts)


def tar_problem(f: BinaryIO, name: str, job: Job, start: int, n: int) -> str | None:
    """Why a WebDataset shard (open as `f`, named `name`) does not hold the samples of indices
    [start, start + n) of `job` (member names in order, and each `.cls` the job's label), or
    None."""
    want_labels = job.labels(start, n)
    want = [
        (name, None if label is None or not name.endswith(".cls") else str(label).encode())
        for j in range(n)
        for label in [None if want_labels is None else int(want_labels[j])]
        for name in _members(job, start + j, label)
    ]
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            seen = 0
            for member in tar:
                if seen == len(want) or member.name != want[seen][0] or not member.isfile():
                    return (
                        f"{name}: member {seen} is not the job's (webdataset samples "
                        "in index order)"
                    )
                cls = want[seen][1]
                if cls is not None:
                    data = tar.extractfile(member)
                    if data is None or data.read(32) != cls:
                        return f"{name}: {member.name}: not the job's label"
                seen += 1
    except (tarfile.TarError, OSError) as exc:
        return f"{name}: not a readable tar archive ({exc})"
    if seen != len(want):
        return f"{name}: {seen} members; the shard has {len(want)}"
    return None


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InvalidArgument(
            "format: parquet needs pyarrow; pip install 'ganserve[datasets]'"
        ) from None
    return pyarrow


def features(job: Job) -> dict[str, Any]:
    """The dataset's features in the `datasets` form (what the parquet schema's metadata and
    the card declare)."""
    found: dict[str, Any] = {
        "image": {"_type": "Image"},
        "index": {"dtype": "int64", "_type": "Value"},
    }
    if job.conditional:
        found["label"] = {"names": list(job.class_names), "_type": "ClassLabel"}
    return found


def parquet_bytes(job: Job, start: int, pixels: np.ndarray, labels: np.ndarray | None) -> bytes:
    """A Parquet shard of images [start, start + len(pixels)) in the Hugging Face layout (see
    the module docstring)."""
    pa = _pyarrow()
    n = len(pixels)
    indices = np.arange(start, start + n, dtype=np.int64)
    image = pa.StructArray.from_arrays(
        [
            pa.array([encode_png(p) for p in pixels], pa.binary()),
            pa.array([f"{sample_key(int(i))}.png" for i in indices], pa.string()),
        ],
        names=["bytes", "path"],
    )
    columns = {"image": image, "index": pa.array(indices, pa.int64())}
    if labels is not None:
        columns["label"] = pa.array(labels.astype(np.int64), pa.int64())
    meta = {"huggingface": json.dumps({"info": {"features": features(job)}}, sort_keys=True)}
    table = pa.table(columns).replace_schema_metadata(meta)
    buffer = io.BytesIO()
    pa.parquet.write_table(table, buffer, row_group_size=max(1, n), compression="none")
    return buffer.getvalue()


def parquet_problem(f: BinaryIO, name: str, job: Job, start: int, n: int) -> str | None:
    """Why a Parquet shard (open as `f`, named `name`) does not hold the rows of indices
    [start, start + n) of `job` (its columns, its `index` and `label` values), or None."""
    pa = _pyarrow()
    want = ["image", "index", *(["label"] if job.conditional else [])]
    try:
        shard = pa.parquet.ParquetFile(f)
        columns = shard.schema_arrow.names
        if columns != want:
            return f"{name}: columns {columns}; a shard has {want}"
        if shard.metadata.num_rows != n:
            return f"{name}: {shard.metadata.num_rows} rows; the shard has {n}"
        table = shard.read(columns=want[1:])
    except (pa.ArrowException, OSError) as exc:
        return f"{name}: not a readable parquet file ({exc})"
    if not np.array_equal(table["index"].to_numpy(), np.arange(start, start + n)):
        return f"{name}: index: not the job's for indices {start} to {start + n - 1}"
    if job.conditional and not np.array_equal(table["label"].to_numpy(), job.labels(start, n)):
        return f"{name}: label: not the job's for indices {start} to {start + n - 1}"
    return None


def wids_index(job: Job) -> bytes:
    """`index.json`: the wids descriptor of a finished WebDataset job, from its layout alone."""
    shardlist = [{"url": tar_name(k), "nsamples": job.span(k)[1]} for k in range(job.shards)]
    value = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": f"{job.model}-v{job.version}-seed{job.seed}",
        "shardlist": shardlist,
    }
    return (json.dumps(value, indent=1) + "\n").encode()


def _size_category(n: int) -> str:
    return next((name for bound, name in _SIZE_CATEGORIES if n < bound), "n>1T")


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A little YAML for the card's header: dicts, lists and scalars, every string quoted."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = k if _PLAIN_KEY.fullmatch(k) else json.dumps(k)
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{key}:")
                lines += _yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    else:
        for item in value:
            if isinstance(item, dict):
                first, *rest = _yaml(item, indent + 2)
                lines.append(f"{pad}- {first.strip()}")
                lines += rest
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a YAML double-quoted string
    if isinstance(v, dict | list):
        return "{}" if isinstance(v, dict) else "[]"
    return json.dumps(v)


def _card_features(job: Job) -> list[dict[str, Any]]:
    """`features` (parquet) in the card's YAML form: the same as the schema's metadata."""
    listed: list[dict[str, Any]] = [
        {"name": "image", "dtype": "image"},
        {"name": "index", "dtype": "int64"},
    ]
    if job.conditional:
        names = {str(i): name for i, name in enumerate(job.class_names)}
        listed.append({"name": "label", "dtype": {"class_label": {"names": names}}})
    return listed


def command(job: Job) -> str:
    """The command that makes the job (the servers and workers aside: they do not change it)."""
    return (
        f"ganserve generate --model {job.model} --version {job.version} --count {job.count} "
        f"--seed {job.seed} "
        + (f"--truncation {job.truncation:g} " if job.truncation else "")
        + f"--format {job.format} --shard-size {job.shard_size} --out DIR"
    )


def card(job: Job, evaluation: dict[str, Any], license: str = "apache-2.0") -> bytes:
    """`README.md`: the dataset card in the Hugging Face form, from the job and the model
    card's evaluation (the server's `ganserve.provenance`)."""
    header: dict[str, Any] = {
        "license": license,
        "task_categories": [
            "image-classification" if job.conditional else "unconditional-image-generation"
        ],
        "size_categories": [_size_category(job.count)],
        "tags": ["synthetic", "ganserve"],
    }
    if job.format == "parquet":  # webdataset's features are inferred right (png: Image)
        header["dataset_info"] = {"features": _card_features(job)}
    if job.format in ("parquet", "webdataset"):
        path = "data/train-*" if job.format == "parquet" else "shard-*.tar"
        header["configs"] = [
            {"config_name": "default", "data_files": [{"split": "train", "path": path}]}
        ]
    body = [
        "---",
        *_yaml(header),
        "---",
        "",
        f"# {job.model} v{job.version}, seed {job.seed}: {job.count} synthetic images",
        "",
        f"Made by the generator `{job.model}` version {job.version}, served by ganserve: image "
        f"i is a function of (model version, seed {job.seed}, i"
        + (", label)" if job.conditional else ")")
        + (
            f", its latents truncated at {job.truncation:g} (values beyond are redrawn)."
            if job.truncation
            else "."
        ),
        "",
        f"- Format: `{job.format}`, {job.shards} shard(s) of up to {job.shard_size} images; "
        "`manifest.jsonl` records each shard with its sha256 (`ganserve verify` checks them).",
        f"- Made with: `{command(job)}`",
    ]
    if job.conditional:
        counts = balanced_counts(0, job.count, job.num_classes)
        body += ["", "| label | class | images |", "|---:|---|---:|"]
        body += [
            f"| {i} | {_cell(name)} | {n} |"
            for i, (name, n) in enumerate(zip(job.class_names, counts, strict=True))
        ]
    body += ["", "## The source model's evaluation (its model card)", ""]
    body += _evaluation_lines(evaluation)
    return ("\n".join(body) + "\n").encode()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """The card's figures: the scalar ones, the independent judge's, and CAS when measured."""
    if not evaluation:
        return ["The model card holds no evaluation."]
    rows: list[tuple[str, Any]] = []

    def add(prefix: str, value: dict[str, Any]) -> None:
        for key, v in sorted(value.items()):
            if isinstance(v, dict):
                add(f"{prefix}{key}.", v)
            elif isinstance(v, bool | int | float | str):  # lists (class shares) are left out
                rows.append((f"{prefix}{key}", v))

    add("", evaluation)
    return ["| figure | value |", "|---|---:|", *(f"| {k} | {_cell(str(v))} |" for k, v in rows)]


def card_evaluation(metadata: dict[str, str]) -> dict[str, Any]:
    """The evaluation a model's card (the server's `ganserve.provenance` metadata) holds."""
    try:
        provenance = json.loads(metadata.get("ganserve.provenance", "{}"))
    except ValueError:
        return {}
    evaluation = provenance.get("evaluation") if isinstance(provenance, dict) else None
    return evaluation if isinstance(evaluation, dict) else {}


def check_format(fmt: str, formats: Sequence[str]) -> None:
    """A format the jobs write, with what it needs installed."""
    if fmt not in formats:
        raise InvalidArgument(f"format: {fmt!r}; one of {', '.join(formats)}")
    if fmt == "parquet":
        _pyarrow()
