"""LiveKit access tokens, minted in one place: a join grant for one room (publish, subscribe, data).

The avatar participant's token (what the LiveKit Agents avatar protocol expects) is kind ``agent`` with the
attribute ``lk.publish_on_behalf = <the agent's identity>``; viewers and callers get kind ``standard``.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Literal

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
TokenKind = Literal["standard", "agent"]  # viewers and callers; the avatar participant


def join_token(api_key: str, api_secret: str, *, room: str, identity: str,
               kind: TokenKind = "standard",
               attributes: dict[str, str] | None = None, ttl: timedelta = timedelta(hours=1),
               name: str | None = None) -> str:
    from livekit import api

    token = (api.AccessToken(api_key, api_secret)
             .with_identity(identity)
             .with_name(name or identity)
             .with_kind(kind)
             .with_ttl(ttl)
             .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                          can_publish_data=True)))
    if attributes:
        token = token.with_attributes(attributes)
    return token.to_jwt()
