"""Room platform ``preview`` (development only): no room at all; the avatar renders, speech comes from
the session WebSocket, and the video is watched through the MJPEG preview endpoint."""
from __future__ import annotations

import asyncio
from typing import Any

from media.assets import AvatarAssets, output_options
from media.rooms.base import WorkerSpec
from media.rooms.generator import RendererVideoGenerator
from core.status import EndReason


class PreviewRoom:
    def __init__(self, spec: WorkerSpec, avatar: AvatarAssets, renderer, *, fps: int = 25,
                 sample_rate: int = 48000, max_buffered_s: float = 30.0) -> None:
        self.spec = spec
        self._avatar = avatar
        self._renderer = renderer
        self._fps, self._rate, self._max_buffered_s = fps, sample_rate, max_buffered_s
        self.generator: RendererVideoGenerator | None = None
        self._closed = asyncio.Event()

    async def connect(self) -> None:
        opts = output_options(self.spec, fps=self._fps, sample_rate=self._rate, format="rgba")
        session = await asyncio.to_thread(self._renderer.open_session, self._avatar.image, self._avatar.rig, opts,
                                          session_id=self.spec.session_id)
        self.generator = RendererVideoGenerator(self._renderer, session, max_buffered_s=self._max_buffered_s)
        self.generator.start()

    async def wait_closed(self) -> EndReason:
        await self._closed.wait()
        return EndReason.ADMIN

    end_detail = None

    async def send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        return None  # no room: the session WebSocket carries the state

    def metrics(self) -> dict[str, Any]:
        return {}

    async def close(self, reason: str | None = None) -> None:
        self._closed.set()
        if self.generator is not None:
            await self.generator.aclose()
