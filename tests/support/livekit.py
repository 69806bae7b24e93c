"""The real LiveKit server for tests: the one ``.ci/run`` started (``LIVEKIT_*`` in the environment), or one
started here from the cached build (``python -m cluster.livekit_local build``).

Skipped when neither is possible, unless ``AVATAR_REQUIRE_LIVEKIT=1`` (CI), where it fails instead.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from cluster import livekit_local
from cluster.livekit_local import LiveKitServer

REQUIRE_LIVEKIT = os.environ.get("AVATAR_REQUIRE_LIVEKIT") == "1"


def unavailable(reason: str) -> None:
    if REQUIRE_LIVEKIT:
        pytest.fail(f"LiveKit server required (AVATAR_REQUIRE_LIVEKIT=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"no LiveKit server: {reason} (python -m cluster.livekit_local build)")


def from_environment() -> LiveKitServer | None:
    url, key, secret = (os.environ.get(k) for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"))
    if not (url and key and secret):
        return None
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return LiveKitServer(url=url, api_key=key, api_secret=secret, port=port, rtc_port=0, pid=0, workdir="")


@contextmanager
def own_server(folder: Path, **fixed) -> Iterator[LiveKitServer]:
    """A server owned by the caller (stopped on exit); ``fixed`` pins ports/keys, e.g. to restart it."""
    if not livekit_local.binary_path().exists():
        unavailable(f"{livekit_local.binary_path()} is not built")
    try:
        server = livekit_local.start(folder, **fixed)
    except livekit_local.LiveKitUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        livekit_local.stop(server)


def token(server: LiveKitServer, identity: str, room: str, *, kind: str = "standard",
          attributes: dict[str, str] | None = None, ttl_s: int = 3600) -> str:
    return livekit_local.dev_token(server, identity, room, kind=kind, attributes=attributes, ttl_s=ttl_s)


def new_room_name() -> str:
    return f"avatar-test-{uuid.uuid4().hex[:8]}"
