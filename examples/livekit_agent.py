"""A LiveKit Agents worker whose agent speaks through an avatar of this platform.

    pip install -e clients/python -e clients/livekit-plugin
    export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    export AVATARS_BASE_URL=http://127.0.0.1:8000 AVATARS_API_KEY=ah_live_... AVATARS_AVATAR_ID=avat_...
    python examples/livekit_agent.py dev      # then join the room it is dispatched to (e.g. the playground)

It runs offline: instead of an LLM and a TTS service it greets with generated speech-like audio. With real
services, pass them to AgentSession (e.g. ``AgentSession(llm=..., tts=..., stt=...)``) and drop the
``audio=`` argument; the avatar lines stay the same. Switching from another vendor's plugin is the one line
``avatars.AvatarSession(...)`` in place of ``bey.AvatarSession(...)``.
"""
from __future__ import annotations

import os

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from livekit.plugins import avatars

AGENT_NAME = os.environ.get("AVATARS_AGENT_NAME", "avatars-example")


async def greeting_audio(seconds: float = 3.0, rate: int = 24000):
    """Syllable-like bursts of a voiced tone, as 100 ms frames (what a TTS plugin would yield)."""
    t = np.arange(int(seconds * rate)) / rate
    voice = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.25 * np.sin(2 * np.pi * 420 * t)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None)  # three syllables a second
    pcm = (voice * syllables * 0.25 * 32767).astype(np.int16)
    step = rate // 10
    for i in range(0, pcm.size, step):
        chunk = pcm[i:i + step]
        yield rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size)


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession()
    avatar = avatars.AvatarSession(
        avatar=os.environ["AVATARS_AVATAR_ID"],
        base_url=os.environ["AVATARS_BASE_URL"],
        api_key=os.environ["AVATARS_API_KEY"],
        aspect_ratio="4:3",
    )
    await avatar.start(session, room=ctx.room)  # the session is ended when the job shuts down
    await session.start(agent=Agent(instructions="Greet the user."), room=ctx.room)
    session.say("Hello! I am your avatar.", audio=greeting_audio())


server = AgentServer()
server.rtc_session(entrypoint, agent_name=AGENT_NAME)

if __name__ == "__main__":
    cli.run_app(server)
