"""ganserve.data against a real server: partitioned, equal to a bulk job, resumable, trainable.

The server runs in a subprocess (`ServerProcess`): DataLoader workers are forked, and a process
that forks should not be running a gRPC server in its own threads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from ganserve import _wire
from ganserve.bulk import run_job
from ganserve.data import SyntheticDataset, mix, part_blocks
from ganserve.errors import InvalidArgument
from ganserve.retry import RetryPolicy
from tests.servers import CGAN, DCGAN, PIX2PIX, ServerProcess

SEED = 5
_wire_resume = _wire.resume


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with ServerProcess("--intra-op-threads", "1") as server:
        yield server.address


@pytest.fixture(scope="module")
def bulk(address: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1000, H, W, C], labels) of a bulk job of `mnist-cgan`, seed SEED."""
    out = tmp_path_factory.mktemp("bulk")
    asyncio.run(run_job([address], CGAN, out, per_class=100, seed=SEED, quiet=True))
    shards = [np.load(p) for p in sorted(out.glob("shard-*.npz"))]
    return np.concatenate([s["images"] for s in shards]), np.concatenate(
        [s["labels"] for s in shards]
    )


# Workers from a fork server, not forked from pytest: a channel opened in a child forked from a
# process that has used gRPC can hang in grpc's Channel.__init__ (seen in CI, 2026-12-05).
# The fork server imports torch and the SDK once (it opens no channel), not every worker.
WORKERS = {"num_workers": 2, "multiprocessing_context": "forkserver"}
multiprocessing.set_forkserver_preload(["torch", "ganserve.data"])


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    return x / 127.5 - 1  # a module function: a fork server's workers get it by pickle


def as_nhwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


def test_the_partition_rule_is_disjoint_and_covers_every_block() -> None:
    for blocks, ranks, workers in ((16, 2, 2), (7, 3, 2), (1, 2, 4), (10, 1, 1)):
        owner = {}
        for r in range(ranks):
            for w in range(workers):
                for b in part_blocks(blocks, r, ranks, w, workers):
                    assert b not in owner
                    owner[b] = (r, w)
        assert sorted(owner) == list(range(blocks))
        for r in range(ranks):  # a rank's share does not depend on its number of workers
            mine = [b for b, (rank, _) in sorted(owner.items()) if rank == r]
            assert mine == list(part_blocks(blocks, r, ranks, 0, 1))


def test_items_are_the_bulk_jobs_images_and_labels_byte_for_byte(
    address: str, bulk: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = bulk
    digits = SyntheticDataset(address, CGAN, per_class=100, seed=SEED, block_size=64)
    assert len(digits) == 1000 and digits.version == 1 and digits.image_shape == (1, 32, 32)
    got = list(digits)
    assert got[0][0].dtype == torch.uint8 and got[0][0].shape == (1, 32, 32)
    assert as_nhwc(torch.stack([image for image, _ in got])).tobytes() == images.tobytes()
    assert [label for _, label in got] == labels.tolist()
    noise = SyntheticDataset(address, DCGAN, count=3, seed=SEED, transform=lambda x: x.float())
    assert [(image.dtype, label) for image, label in noise] == [(torch.float32, -1)] * 3


def test_two_ranks_of_two_workers_see_disjoint_indices_whose_union_is_the_range(
    address: str, bulk: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = bulk
    index_of = {image.tobytes(): i for i, image in enumerate(images)}
    assert len(index_of) == len(images)  # every image tells its index
    seen: list[list[int]] = []
    for rank in range(2):
        digits = SyntheticDataset(
            address, CGAN, count=1000, seed=SEED, block_size=64, rank=rank, world_size=2
        )
        indices = []
        for batch, batch_labels in DataLoader(digits, batch_size=50, **WORKERS):
            found = [index_of[image.tobytes()] for image in as_nhwc(batch)]
            assert batch_labels.tolist() == labels[found].tolist()
            indices += found
        assert sorted(indices) == sorted(digits.indices())
        seen.append(indices)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(1000))
    assert len(seen[0]) == 512 and len(seen[1]) == 488  # blocks 0, 2, ... 14 and 1, 3, ... 15


def test_a_resumed_dataset_continues_exactly_in_one_process(address: str) -> None:
    def dataset() -> SyntheticDataset:
        return SyntheticDataset(address, CGAN, count=300, seed=SEED, block_size=64)

    whole = [image for image, _ in dataset()]
    first = dataset()
    stream = iter(first)
    head = [next(stream)[0] for _ in range(100)]
    state = first.state_dict()
    assert state["served"] == {"0/1": 100} and state["version"] == 1
    stream.close()
    resumed = dataset()
    resumed.load_state_dict(state)
    tail = [image for image, _ in resumed]
    assert torch.equal(torch.stack(head + tail), torch.stack(whole))
    assert len(list(resumed)) == 300  # the pass after a resumed one starts again
    other = SyntheticDataset(address, CGAN, count=300, seed=SEED + 1, block_size=64)
    with pytest.raises(InvalidArgument, match="seed"):
        other.load_state_dict(state)


def test_a_stateful_dataloader_with_two_workers_resumes_exactly(address: str) -> None:
    digits = SyntheticDataset(address, CGAN, count=400, seed=SEED, block_size=32)

    def loader() -> StatefulDataLoader:
        return StatefulDataLoader(digits, batch_size=16, **WORKERS)

    whole = [images for images, _ in loader()]
    first = loader()
    batches = iter(first)
    head = [next(batches)[0] for _ in range(7)]  # workers 0 and 1 have read ahead by now
    state = first.state_dict()
    workers = state["_snapshot"]["_worker_snapshots"]  # each worker's dataset_state is ours
    assert [w["dataset_state"]["served"] for w in workers.values()] == [{"0/2": 64}, {"1/2": 48}]
    del batches, first
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [images for images, _ in resumed]
    assert torch.equal(torch.cat(head + tail), torch.cat(whole))
    # the state of two workers does not fit a loader with three
    wrong = StatefulDataLoader(digits, batch_size=16, num_workers=3)
    wrong.load_state_dict(state)
    with pytest.raises(InvalidArgument, match="same number of DataLoader workers"):
        list(wrong)


def test_a_broken_stream_resumes_where_it_broke(monkeypatch: pytest.MonkeyPatch) -> None:
    resumed_after: list[int] = []

    def resume(request: Any, received: int) -> Any:
        resumed_after.append(received)
        return _wire_resume(request, received)

    monkeypatch.setattr(_wire, "resume", resume)
    patient = RetryPolicy(max_attempts=100, max_backoff=0.5)
    server = ServerProcess("--intra-op-threads", "1")
    try:
        digits = SyntheticDataset(
            server.address, CGAN, count=2000, seed=SEED, block_size=2000, retry=patient
        )
        whole = torch.stack([image for image, _ in digits])
        stream = iter(digits)
        got = [next(stream)[0] for _ in range(300)]
        server.process.kill()  # no drain: the stream breaks
        server.process.wait()
        server.stop()
        server = ServerProcess("--intra-op-threads", "1", "--port", str(server.port))
        got += [image for image, _ in stream]
        assert torch.equal(torch.stack(got), whole)
        assert any(0 < n < 2000 for n in resumed_after), resumed_after  # mid-stream, not anew
    finally:
        server.stop()


def test_the_cas_classifier_trains_on_it(address: str) -> None:
    # the value measurement's own classifier (ganserve.training.cas), fed by the DataLoader
    from ganserve.training.cas import CasNet

    torch.manual_seed(0)
    digits = SyntheticDataset(
        address, CGAN, per_class=192, seed=SEED, block_size=64, transform=_to_unit_range
    )
    net = CasNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for images, labels in DataLoader(digits, batch_size=64, **WORKERS):
        loss = nn.functional.cross_entropy(net(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert len(losses) == 30  # 1920 images: 30 blocks, 15 for each worker
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses


def test_mix_interleaves_at_the_ratio_deterministically() -> None:
    real = [("real", i) for i in range(40)]
    generated = [("generated", i) for i in range(100)]
    mixed = list(mix(real, generated, 0.5, seed=1))
    assert mixed == list(mix(real, generated, 0.5, seed=1))
    assert mixed != list(mix(real, generated, 0.5, seed=2))
    for start in range(0, 60, 3):  # one generated item per two real ones, in every window
        assert [kind for kind, _ in mixed[start : start + 3]].count("generated") == 1
    assert [item for item in mixed if item[0] == "real"] == real  # in order, each once
    assert [item for item in mixed if item[0] == "generated"] == generated[:20]
    assert list(mix(real, generated, 0, seed=1)) == real
    with pytest.raises(InvalidArgument, match="ratio"):
        mix(real, generated, -1)


def test_mix_splits_a_real_dataset_over_workers(address: str) -> None:
    real = [(torch.zeros(1, 32, 32, dtype=torch.uint8), 100 + i) for i in range(40)]
    digits = SyntheticDataset(address, CGAN, count=128, seed=SEED, block_size=16)
    labels = [
        label
        for _, batch in DataLoader(mix(real, digits, 0.5, seed=1), batch_size=8, **WORKERS)
        for label in batch.tolist()
    ]
    assert sorted(label for label in labels if label >= 100) == list(range(100, 140))
    assert 20 <= sum(label < 100 for label in labels) <= 22  # each worker: 10 windows, + 1 at most


def test_bad_arguments(address: str) -> None:
    with pytest.raises(InvalidArgument, match="exactly one"):
        SyntheticDataset(address, CGAN, count=10, per_class=1)
    with pytest.raises(InvalidArgument, match="unconditional"):
        SyntheticDataset(address, DCGAN, per_class=1)
    with pytest.raises(InvalidArgument, match="translates"):
        SyntheticDataset(address, PIX2PIX, count=1)
    with pytest.raises(InvalidArgument, match="rank"):
        SyntheticDataset(address, CGAN, count=1, rank=2, world_size=2)
    with pytest.raises(InvalidArgument, match="2\\^64"):
        SyntheticDataset(address, CGAN, count=2, start_index=2**64 - 1)


def test_the_sdk_imports_without_torch_and_ganserve_data_says_what_to_install() -> None:
    check = (
        "import sys; sys.modules['torch'] = None; import ganserve, ganserve.bulk\n"
        "try:\n    import ganserve.data\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert "pip install 'ganserve[data]'" in out.stdout


def test_truncated_items_are_the_truncated_bulk_jobs(address: str, tmp_path: Path) -> None:
    options = dict(count=200, seed=SEED, truncation=0.5, quiet=True)
    asyncio.run(run_job([address], CGAN, tmp_path, **options))  # type: ignore[arg-type]
    with np.load(tmp_path / "shard-00000.npz") as shard:
        want = shard["images"][:200]
    digits = SyntheticDataset(address, CGAN, count=200, seed=SEED, truncation=0.5, block_size=64)
    got = np.stack([as_nhwc(image[None])[0] for image, _ in digits])
    assert np.array_equal(got, want)
    state = digits.state_dict()
    assert state["truncation"] == 0.5
    plain = SyntheticDataset(address, CGAN, count=200, seed=SEED, block_size=64)
    with pytest.raises(InvalidArgument, match="truncation"):
        plain.load_state_dict(state)
    old = {k: v for k, v in plain.state_dict().items() if k != "truncation"}  # saved before it
    plain.load_state_dict(old)
    with pytest.raises(InvalidArgument, match="truncation"):
        SyntheticDataset(address, CGAN, count=10, truncation=0.01)
