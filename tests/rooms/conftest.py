"""Room adapter tests: the real renderer on a real photo, livekit-agents' own protocol classes on both
sides of an in-process fake room, daily-python's real virtual devices. Small frames (160×120) keep the
suite cheap on 2 shared cores; the protocol and timing do not depend on the frame size."""
from __future__ import annotations

import asyncio
import logging

import pytest
import torch

from core.errors import ModelFilesMissing

torch.set_num_threads(1)  # the machine is shared: one core per test process
logging.getLogger("livekit.agents").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def avatar():
    """(aligned image, FaceRig) of grace_hopper through the real face pipeline."""
    from pipelines.faces.models import model_paths

    try:
        model_paths()
    except ModelFilesMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    from media.renderer.cli import load_avatar

    return load_avatar("grace_hopper")


def run(coro, timeout: float = 60.0):
    """Run one test coroutine on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.01):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(interval)
