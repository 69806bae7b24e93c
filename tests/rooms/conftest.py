"""Room adapter tests: the real renderer on a real photo, livekit-agents' own protocol classes on both
sides of an in-process fake room, daily-python's real virtual devices. Small frames (160×120) keep the
suite cheap on 2 shared cores; the protocol and timing do not depend on the frame size."""
from __future__ import annotations

import asyncio
import logging

import pytest
import torch

from core.errors import ModelFilesMissing
from tests.support.waiting import wait_until  # noqa: F401 - the room tests import it from here

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
