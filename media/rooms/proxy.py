"""Rooms the platform provides itself (room platform ``proxy``) on the deployment's LiveKit server.

One room per session, named after it (``avatar-<session id>``), created before the worker joins and
deleted when the session ends; the scheduler owns them. The worker joins as ``proxy_avatar_identity``
(kind ``agent``, ``lk.publish_on_behalf`` = the caller's identity, so it takes speech from the caller); the
caller gets a token for that one room, valid no longer than the session.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
from livekit import api

from core import errors
from core.clock import utcnow
from core.livekit_tokens import PUBLISH_ON_BEHALF, join_token
from core.settings import Settings

log = logging.getLogger("avatars.proxy_rooms")

ROOM_PREFIX = "avatar-"
MIN_TOKEN_TTL = timedelta(minutes=1)


def room_name(session_id: str) -> str:
    return f"{ROOM_PREFIX}{session_id}"


@dataclass
class ProxyRoom:
    name: str
    url: str
    avatar_token: str = field(repr=False)
    participant_token: str = field(repr=False)

    def for_caller(self) -> dict[str, str]:
        """What the create response's ``session.room`` carries (only there)."""
        return {"platform": "proxy", "roomURL": self.url, "participantToken": self.participant_token}


class ProxyRooms:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def configured(self) -> bool:
        return self.settings.livekit_configured

    def _server(self) -> tuple[str, str, str]:
        """The LiveKit server's URL, API key and secret."""
        s = self.settings
        if not (s.livekit_url and s.livekit_api_key and s.livekit_api_secret):  # (= not self.configured)
            raise errors.InvalidRoomPlatform("room platform proxy needs the deployment's LiveKit server "
                                             "(AVATAR_LIVEKIT_URL, AVATAR_LIVEKIT_API_KEY, AVATAR_LIVEKIT_API_SECRET)")
        return s.livekit_url, s.livekit_api_key, s.livekit_api_secret

    def _client(self) -> api.LiveKitAPI:
        url, key, secret = self._server()
        http_url = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
        return api.LiveKitAPI(http_url, key, secret,
                              timeout=aiohttp.ClientTimeout(total=self.settings.livekit_api_timeout_s), failover=False)

    async def provision(self, session_id: str, expiration: datetime | None) -> ProxyRoom:
        """Create the session's room and mint both tokens."""
        url, key, secret = self._server()
        name = room_name(session_id)
        client = self._client()
        try:
            await client.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=300, departure_timeout=30))
        except Exception as exc:
            raise errors.RoomConnectFailed(f"could not create the session's room on the LiveKit server: "
                                           f"{type(exc).__name__}") from None
        finally:
            await client.aclose()
        ttl = max(MIN_TOKEN_TTL, (expiration - utcnow()) if expiration else timedelta(hours=1))
        s = self.settings
        return ProxyRoom(
            name=name, url=url,
            avatar_token=join_token(key, secret, room=name, identity=s.proxy_avatar_identity,
                                    kind="agent", attributes={PUBLISH_ON_BEHALF: s.proxy_caller_identity}, ttl=ttl),
            participant_token=join_token(key, secret, room=name,
                                         identity=s.proxy_caller_identity, ttl=ttl),
        )

    async def delete(self, session_id: str) -> None:
        """Delete the session's room (everyone in it is disconnected); a room already gone is fine."""
        if not self.configured:
            return
        client = self._client()
        try:
            await client.room.delete_room(api.DeleteRoomRequest(room=room_name(session_id)))
        except Exception as exc:  # not found, or the server is away: the room's empty_timeout removes it
            log.info("proxy room not deleted: %s", type(exc).__name__, extra={"session_id": session_id})
        finally:
            await client.aclose()
