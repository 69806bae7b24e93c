"""``AvatarSession``: the shape of the vendors' avatar plugins (``livekit.plugins.bey``, ``.tavus``, ``.simli``),
so switching is a one-line change.

``start(agent_session, room)`` mints the avatar participant's token (kind ``agent``,
``lk.publish_on_behalf`` = the agent's identity, one room, a TTL), creates the session through the SDK
(platform ``livekit``), and routes the agent's speech to the avatar through ``DataStreamAudioOutput``,
which waits for the avatar's video track. The session is ended on the job's shutdown or ``aclose()``.
"""
from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from typing import Any

from livekit import api, rtc
from livekit.agents import NOT_GIVEN, AgentSession, NotGivenOr, get_job_context
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

from avatars_sdk import AsyncAvatarsClient, AvatarsError, RetryPolicy

logger = logging.getLogger("livekit.plugins.avatars")

_AVATAR_AGENT_IDENTITY = "avatars-avatar-agent"
_AVATAR_AGENT_NAME = "avatars-avatar-agent"


class AvatarsException(Exception):
    """Configuration or start-up errors of the avatar plugin."""


class AvatarSession:
    """An avatar session of this platform, pointed at any deployment by ``base_url``."""

    def __init__(
        self,
        *,
        avatar: NotGivenOr[str] = NOT_GIVEN,
        base_url: NotGivenOr[str] = NOT_GIVEN,
        api_key: NotGivenOr[str] = NOT_GIVEN,
        aspect_ratio: str = "4:3",
        metadata: dict[str, Any] | None = None,
        avatar_participant_identity: NotGivenOr[str] = NOT_GIVEN,
        avatar_participant_name: NotGivenOr[str] = NOT_GIVEN,
        token_ttl: timedelta = timedelta(hours=1),
        retry: RetryPolicy | None = None,
    ) -> None:
        self._avatar = avatar or os.getenv("AVATARS_AVATAR_ID")
        if not self._avatar:
            raise AvatarsException("avatar must be set by argument or the AVATARS_AVATAR_ID environment variable")
        self._base_url = base_url or os.getenv("AVATARS_BASE_URL")
        self._api_key = api_key or os.getenv("AVATARS_API_KEY")
        if not self._base_url or not self._api_key:
            raise AvatarsException("base_url and api_key must be set by arguments or the AVATARS_BASE_URL and "
                                   "AVATARS_API_KEY environment variables")
        self._aspect_ratio, self._metadata = aspect_ratio, metadata or {}
        self._avatar_participant_identity = avatar_participant_identity or _AVATAR_AGENT_IDENTITY
        self._avatar_participant_name = avatar_participant_name or _AVATAR_AGENT_NAME
        self._token_ttl = token_ttl
        self._retry = retry
        self._client: AsyncAvatarsClient | None = None
        self._closing: asyncio.Future | None = None
        self.session_id: str | None = None
        self.session_token: str | None = None  # for the session WebSocket, if wanted

    async def start(
        self,
        agent_session: AgentSession,
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_key: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_secret: NotGivenOr[str] = NOT_GIVEN,
    ) -> None:
        livekit_url = livekit_url or os.getenv("LIVEKIT_URL")
        livekit_api_key = livekit_api_key or os.getenv("LIVEKIT_API_KEY")
        livekit_api_secret = livekit_api_secret or os.getenv("LIVEKIT_API_SECRET")
        if not livekit_url or not livekit_api_key or not livekit_api_secret:
            raise AvatarsException("livekit_url, livekit_api_key and livekit_api_secret must be set by arguments "
                                   "or environment variables")
        job_ctx = get_job_context(required=False)
        if job_ctx is not None:
            agent_identity = job_ctx.local_participant_identity  # known before the room is connected
        elif room.isconnected():
            agent_identity = room.local_participant.identity
        else:
            raise AvatarsException("failed to get the local participant's identity (connect the room first)")

        avatar_token = (
            api.AccessToken(api_key=livekit_api_key, api_secret=livekit_api_secret)
            .with_kind("agent")
            .with_identity(self._avatar_participant_identity)
            .with_name(self._avatar_participant_name)
            .with_ttl(self._token_ttl)
            .with_grants(api.VideoGrants(room_join=True, room=room.name, can_publish=True, can_subscribe=True,
                                         can_publish_data=True))
            # the avatar publishes its audio and video on behalf of the agent
            .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
            .to_jwt()
        )

        self._client = AsyncAvatarsClient(base_url=self._base_url, api_key=self._api_key, retry=self._retry)
        logger.debug("starting avatar session", extra={"room": room.name})
        try:
            created = await self._client.create_session(
                self._avatar, platform="livekit", url=livekit_url, token=avatar_token,
                aspect_ratio=self._aspect_ratio, metadata=self._metadata)
        except AvatarsError:
            await self._client.aclose()
            self._client = None
            raise
        self.session_id = created.session.session_id
        self.session_token = created.session.session_token
        logger.info("avatar session started", extra={"session_id": self.session_id})
        # The job's shutdown closes the AgentSession before it leaves the room: ending there makes the end
        # ours (user_requested) rather than the avatar noticing the agent left; the shutdown callback is the
        # fallback when the session was never started.
        agent_session.on("close", lambda _: self._close_soon())
        if job_ctx is not None:
            job_ctx.add_shutdown_callback(self.aclose)

        agent_session.output.audio = DataStreamAudioOutput(
            room=room,
            destination_identity=self._avatar_participant_identity,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        )

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._end())

    async def aclose(self) -> None:
        """End the session (bills it) and release the HTTP client; safe to call twice, or concurrently."""
        self._close_soon()
        await asyncio.shield(self._closing)

    async def _end(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self.session_id:
                await client.end_session(self.session_id)
                logger.info("avatar session ended", extra={"session_id": self.session_id})
        finally:
            await client.aclose()
