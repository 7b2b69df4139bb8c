"""How a model's instances and threads are planned from the flags, the device and the cores."""

import pytest

from ganserve.export.metadata import example_inputs
from ganserve.server.runner import CPU, CUDA, Runner, plan_instances
from tests.servers import DCGAN, MODELS


@pytest.mark.parametrize(
    ("provider", "instances", "threads", "cores", "planned"),
    [
        (CPU, 0, 0, 2, (2, 1)),  # one instance per core, one thread each: measured best
        (CPU, 0, 0, 16, (16, 1)),
        (CPU, 1, 0, 4, (1, 4)),  # the cores shared out over the instances asked for
        (CPU, 3, 0, 2, (3, 1)),
        (CPU, 0, 2, 8, (4, 2)),
        (CPU, 0, 4, 2, (1, 4)),
        (CPU, 2, 3, 2, (2, 3)),  # both given: as given
        (CUDA, 0, 0, 16, (2, 1)),
        (CUDA, 4, 0, 16, (4, 1)),
    ],
)
def test_plan(
    provider: str, instances: int, threads: int, cores: int, planned: tuple[int, int]
) -> None:
    assert plan_instances(provider, instances, threads, cores) == planned


def test_a_runner_uses_the_threads_it_was_given() -> None:
    runner = Runner(MODELS / DCGAN / "1" / "model.onnx", device="cpu", threads=1)
    assert runner.threads == 1 and runner.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("model", ["mnist-dcgan", "mnist-cgan", "mnist-edges2digits"])
def test_one_thread_and_every_core_give_the_same_bytes(model: str) -> None:
    # the solo session (every core) and the instances (one thread each) serve the same calls
    path = MODELS / model / "1" / "model.onnx"
    narrow, wide = (Runner(path, device="cpu", threads=t) for t in (1, 4))
    feeds = example_inputs(narrow.card, 7)
    assert narrow.run(feeds).tobytes() == wide.run(feeds).tobytes()
