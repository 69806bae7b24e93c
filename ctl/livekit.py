"""``avatarctl livekit token``: mint the access token the avatar's worker joins a LiveKit room with.

In a LiveKit room the agent (or its backend) mints the avatar participant's token and passes it as
``room.token`` in ``POST /v1/sessions``; the worker just joins with it. The shape the LiveKit Agents avatar
protocol expects (``../shared/LIVEKIT_AVATAR_PROTOCOL.md``): participant kind ``agent``, an identity of
its own, a join grant for that one room with publish, subscribe and data, and the attribute
``lk.publish_on_behalf = <the agent's identity>`` (frontends use it to show the avatar's video as the
agent's; the worker takes speech only from that identity). The token's lifetime only bounds the join:
a participant that has joined stays in the room after its token expires.
"""
from __future__ import annotations

import argparse
import os
from datetime import timedelta

from core.livekit_tokens import PUBLISH_ON_BEHALF, TokenKind, join_token


def avatar_token(api_key: str, api_secret: str, *, room: str, identity: str, agent_identity: str | None = None,
                 kind: TokenKind = "agent", ttl_s: int = 3600, name: str | None = None) -> str:
    """A signed LiveKit JWT for the avatar participant (``agent_identity``: whose speech it plays)."""
    return join_token(api_key, api_secret, room=room, identity=identity, kind=kind, name=name,
                      attributes={PUBLISH_ON_BEHALF: agent_identity} if agent_identity else None,
                      ttl=timedelta(seconds=ttl_s))


def cmd_token(args, settings) -> None:
    key = args.api_key or os.environ.get("LIVEKIT_API_KEY")
    secret = args.api_secret or os.environ.get("LIVEKIT_API_SECRET")
    if not key or not secret:
        raise SystemExit("error: the LiveKit API key and secret are needed: --api-key/--api-secret or "
                         "LIVEKIT_API_KEY/LIVEKIT_API_SECRET (livekit-server --dev: devkey / secret)")
    print(avatar_token(key, secret, room=args.room, identity=args.identity, agent_identity=args.agent_identity,
                       kind=args.kind, ttl_s=args.ttl, name=args.name))


def add_parser(sub) -> None:
    lk = sub.add_parser("livekit", help="LiveKit helpers").add_subparsers(dest="sub", required=True)
    t = lk.add_parser("token", help="print an access token for the avatar participant (room.token in a create)",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--room", required=True, help="the room the avatar joins")
    t.add_argument("--identity", required=True, help="the avatar participant's identity (unique in the room)")
    t.add_argument("--agent-identity", help="the agent whose speech the avatar plays (lk.publish_on_behalf)")
    t.add_argument("--kind", default="agent", choices=["agent", "standard"], help="participant kind")
    t.add_argument("--ttl", type=int, default=3600, help="seconds the token can be used to join")
    t.add_argument("--name", help="display name (default: the identity)")
    t.add_argument("--api-key", help="LiveKit API key (default: $LIVEKIT_API_KEY)")
    t.add_argument("--api-secret", help="LiveKit API secret (default: $LIVEKIT_API_SECRET; prefer the "
                                        "variable: arguments show up in process lists)")
    t.set_defaults(func=cmd_token)
