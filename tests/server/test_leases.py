"""Model leases: a version retired while calls hold it unloads when the last one ends, at once
(no polling), and takes no new call meanwhile."""

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from ganserve.server.errors import ModelUnavailable
from ganserve.server.metrics import Metrics
from ganserve.server.models import ModelRepository, State
from tests.servers import BASE, DCGAN


def test_a_retired_version_unloads_when_its_last_lease_ends() -> None:
    async def scenario() -> None:
        repo = ModelRepository(replace(BASE, model_control="explicit"), Metrics())
        await repo.load([DCGAN])
        try:
            async with repo.lease(DCGAN) as mv, repo.lease(DCGAN, mv.version) as same:
                assert same is mv and mv.users == 2 and mv.state is State.READY
                await repo.unload(DCGAN)
                await asyncio.sleep(0.2)
                assert mv.state is State.UNLOADED and mv.batcher is not None  # still held
                with pytest.raises(ModelUnavailable):
                    async with repo.lease(DCGAN):
                        pass
                z = np.zeros((1, mv.card.latent_size), np.float32)
                assert len(await mv.batcher.submit({"z": z})) == 1  # the holders still run
            assert mv.users == 0
            for _ in range(50):  # event-loop turns, no clock: the last release starts the unload
                if mv.batcher is None:
                    break
                await asyncio.sleep(0)
            assert mv.batcher is None and not mv.runners
            assert repo.ready_versions(DCGAN) == [] and not repo.any_ready
        finally:
            await repo.close()

    asyncio.run(scenario())


def test_a_lease_is_returned_when_the_call_fails() -> None:
    async def scenario() -> None:
        repo = ModelRepository(BASE, Metrics())
        await repo.load([DCGAN])
        try:
            with pytest.raises(RuntimeError):
                async with repo.lease(DCGAN) as mv:
                    raise RuntimeError("the call failed")
            assert mv.users == 0
        finally:
            await repo.close()

    asyncio.run(scenario())
