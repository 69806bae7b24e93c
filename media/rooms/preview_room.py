"""Room platform ``preview`` (development only): no room at all; the avatar renders, speech comes from
the session WebSocket, and the video is watched through the MJPEG preview endpoint."""
from __future__ import annotations

import asyncio
from typing import Any

from core.status import EndReason
from media.assets import AvatarAssets, output_options
from media.renderer import Renderer
from media.rooms.base import WorkerSpec
from media.rooms.options import PreviewOptions
from media.session import MediaSession


class PreviewRoom:
    def __init__(self, spec: WorkerSpec, avatar: AvatarAssets, renderer: Renderer,
                 options: PreviewOptions | None = None) -> None:
        self.spec = spec
        self._avatar = avatar
        self._renderer = renderer
        self.options = options or PreviewOptions()
        self.media: MediaSession | None = None
        self._closed = asyncio.Event()

    async def connect(self) -> None:
        o = self.options
        output = output_options(self.spec, fps=o.fps, sample_rate=o.sample_rate, format="rgba")
        session = await asyncio.to_thread(self._renderer.open_session, self._avatar.image, self._avatar.rig, output,
                                          session_id=self.spec.session_id)
        self.media = MediaSession(self._renderer, session, o.limits)
        self.media.start()

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
        if self.media is not None:
            await self.media.aclose()
