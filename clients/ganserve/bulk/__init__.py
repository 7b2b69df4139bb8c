"""Bulk jobs: N images from a generator into a dataset on disk that survives crashes.

The job is cut into shards of `shard_size` consecutive indices under one seed. Each shard is
written to a temporary name and renamed when complete, then recorded in `manifest.jsonl`
(shard, seed, start index, count, labels per class, model, version, files, sha256; the schema
is `ganserve.manifest`'s; the header line records the job, with `truncation` when the latents
are truncated, `--truncation T`). A re-run of the same command skips the shards the manifest
records (and whose files still match their checksum) and makes only the missing ones; since an
image is a function of (model version, seed, truncation, index, label), the finished dataset is
byte-identical to an uninterrupted run. At the end the manifest is rewritten in shard order, so
it is identical too.

A job starts only in an empty folder (or a new one) or in a folder holding a manifest of the
same job, to resume it; a worker of a distributed job (`--workers N`) also in one holding the
other workers' manifests of the job. Any other folder is refused before anything in it is
touched: the job would write over files named as its own are.

Formats: `npz` (one `shard-NNNNN.npz` per shard: `images` uint8 [n, H, W, C], `indices`,
and `labels` for conditional models; written with fixed zip timestamps so the bytes repeat)
or `png` (one folder per class, `<class>/<index>.png`, the layout torchvision's ImageFolder
reads; `images/` for unconditional models). A class's folder is its name, as the server's model
card gives it, only when that is a plain folder name: 1 to 64 ASCII letters, digits, spaces,
`_`, `+` or `-`, starting with a letter or digit and not ending in a space, no other class's
name ignoring case, and no Windows device name (`NUL`, `COM1`, ...). Any other class, `..`,
`a/b`, `/tmp/x`, an empty or a duplicate name, gets the folder `_<label>` (`_3`), which no
plain name can be: nothing a server says becomes a path. `webdataset` (`shard-NNNNNN.tar`,
samples `{key}.png`/`.cls`/`.json`, and a wids `index.json` once every shard is done) and
`parquet` (`data/train-NNNNN-of-NNNNN.parquet` in the Hugging Face layout) are the formats
training pipelines stream; `ganserve.bulk.formats` has their layout. Every generation dataset
gets a `README.md` dataset card (the Hugging Face form) as its job starts.

`out` is a local folder or any fsspec URL: `s3://bucket/prefix` (`pip install 'ganserve[s3]'`),
the endpoint and credentials from the standard AWS environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, ...), so one command works against AWS, MinIO or moto. `ganserve.bulk.store`
says how each guarantee holds there: a PUT is atomic, the manifest is rewritten whole per
record, and no lock is needed (the manifest's header is created conditionally). A scheme no
installed fsspec package knows is refused in one line, never taken for a path.

`verify` (and `merge`, and a resume) checks each record against what the job's layout gives
(shard, start index, count, labels per class, model, version, seed, files), then its files:
each must be a regular file inside the folder (a link is not followed), whose checksum matches
and, for npz, whose `indices` and `labels` are the shard's.

The labels a shard holds are the ones the server returned with its images, checked against the
job's (the balanced rule of `ganserve.contract`): a reply that differs is an `UnexpectedReply`
and nothing of it is written. A job's own failures are `ganserve.JobError`s: `FolderLocked`
(another job is writing to the folder), `ManifestError`, `UnexpectedReply`.

Modules: `files` (atomic writes, checksums, npz bytes, the folder lock), `store` (a local
folder or a bucket prefix: where a dataset's files go), `formats` (tar and
parquet shards, the wids index, the dataset card), `manifest` (its schema,
reader and writer), `layout` (the job, its shards and their files, the checks of a record),
`jobs` (`run_job`, `run_translate_job`), `merge` (`merge`, `verify`), `progress`. The commands
(`ganserve generate`, `translate`, `merge`, `verify`) are `ganserve.bulk_cli`'s.
"""

from ganserve.bulk.files import FolderLock, npz_bytes
from ganserve.bulk.jobs import run_job, run_translate_job
from ganserve.bulk.layout import Dataset, Job, Translated, class_folders
from ganserve.bulk.manifest import FORMATS, MANIFEST, Manifest, read_manifest, worker_manifest
from ganserve.bulk.merge import merge, verify
from ganserve.errors import FolderLocked, JobError, ManifestError, UnexpectedReply

__all__ = [
    "FORMATS",
    "MANIFEST",
    "Dataset",
    "FolderLock",
    "FolderLocked",
    "Job",
    "JobError",
    "Manifest",
    "ManifestError",
    "Translated",
    "UnexpectedReply",
    "class_folders",
    "merge",
    "npz_bytes",
    "read_manifest",
    "run_job",
    "run_translate_job",
    "verify",
    "worker_manifest",
]
