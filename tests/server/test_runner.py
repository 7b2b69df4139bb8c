"""How a model's instances and threads are planned from the flags, the device and the cores."""

import pytest

from server.runner import CPU, CUDA, Runner, plan_instances
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
