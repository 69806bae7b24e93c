"""The LiveKit Agents plugin (clients/livekit-plugin) with a real livekit-agents ``AgentSession`` in a real
LiveKit room against the real app: ``AvatarSession.start`` mints the avatar's token and creates the session
through the SDK; the agent's speech (``session.say`` with generated audio: no TTS service offline) reaches
the avatar through ``DataStreamAudioOutput``; a viewer sees the avatar's mouth move; ``aclose()`` ends the
session and bills it."""
from __future__ import annotations

import asyncio
import time

import jwt
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession
from matplotlib import cbook

from media.renderer.speech import synth_speech
from avatars_sdk import AvatarsClient
from bench.viewer import Viewer
from livekit.plugins import avatars
from tests.support.livekit import new_room_name, token
from tests.test_livekit_rooms import livekit_deployment, run, until

pytestmark = pytest.mark.timeout(600)

AGENT = "plugin-test-agent"


@pytest.fixture(scope="module")
def lk_app(ray_cluster, livekit_server, tmp_path_factory):
    with livekit_deployment(ray_cluster, tmp_path_factory.mktemp("api-lk-plugin"), "api-lk-plugin", livekit_server) \
            as app:
        yield app


async def generated_speech(seconds: float, rate: int = 24000):
    """What a TTS would yield: 100 ms ``rtc.AudioFrame``s of speech-like audio."""
    audio = synth_speech(seconds, rate, seed=3).audio
    n = rate // 10
    for i in range(0, audio.size, n):
        chunk = audio[i: i + n]
        yield rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size)


def test_agent_session_speaks_through_the_avatar_and_aclose_bills(lk_app, livekit_server):
    server, tenant = livekit_server, lk_app.tenant("growth")
    sdk = AvatarsClient(base_url=lk_app.base_url, api_key=tenant.api_key)
    avatar_id = sdk.upload_face(cbook.get_sample_data("grace_hopper.jpg").read(), filename="grace.jpg").avatar_id
    room_name = new_room_name()

    async def main():
        room = rtc.Room()
        await room.connect(server.url, token(server, AGENT, room_name, kind="agent"))
        viewer = Viewer(server.url, token(server, "viewer", room_name), AGENT)
        await viewer.join()

        session = AgentSession()
        avatar = avatars.AvatarSession(avatar=avatar_id, base_url=lk_app.base_url, api_key=tenant.api_key,
                                       aspect_ratio="4:3", avatar_participant_identity="our-avatar")
        await avatar.start(session, room, livekit_url=server.url, livekit_api_key=server.api_key,
                           livekit_api_secret=server.api_secret)
        await session.start(agent=Agent(instructions="You are a test agent."), room=room)
        sid = avatar.session_id
        assert sid and sid.startswith("sess_")

        # The avatar joined with the token the plugin minted: kind agent, publishing on the agent's behalf.
        found = await until(viewer.avatar, 60, "the avatar participant")
        assert found.identity == "our-avatar" and found.attributes.get("lk.publish_on_behalf") == AGENT
        assert found.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        await until(lambda: len(viewer.video) >= 25, 60, "avatar video at the viewer")
        viewer.locate_mouth()
        t0 = time.monotonic()
        await until(lambda: len(viewer.mouth_series(t0)) >= 75, 60, "3 s of the resting mouth at the viewer")
        rest = [v for _, v in viewer.mouth_series(t0)]

        t_speech = time.monotonic()
        handle = session.say("Hello from the agent.", audio=generated_speech(3.0))
        await asyncio.wait_for(handle.wait_for_playout(), 60)
        speech = [v for _, v in viewer.mouth_series(t_speech)]
        assert any(t > t_speech for t in viewer.sound_times), "the avatar's sound never reached the viewer"
        assert min(speech) < np.mean(rest) - max(6 * np.std(rest), 4.0), "mouth never opened at the viewer"

        await avatar.aclose()
        await avatar.aclose()  # idempotent
        ended = sdk.get_session(sid)
        assert ended.status == "ended" and ended.end_reason == "user_requested" and ended.billing.minutes >= 1
        await session.aclose()
        await viewer.leave()
        await room.disconnect()

    run(main(), timeout=400)
    sdk.close()


def test_start_mints_a_room_scoped_agent_token_with_a_ttl(monkeypatch):
    """The token the plugin hands to the API (captured at the SDK), decoded: the vendor plugins' grants."""
    captured = {}

    async def fake_create(self, avatar, **kw):
        captured.update(kw, avatar=avatar)
        raise RuntimeError("stop here")

    from avatars_sdk import AsyncAvatarsClient

    monkeypatch.setattr(AsyncAvatarsClient, "create_session", fake_create)

    class FakeRoom:  # a connected room's name and local identity is all start() reads before the API call
        name = "room-1"
        local_participant = type("P", (), {"identity": "agent-7"})()

        def isconnected(self):
            return True

    avatar = avatars.AvatarSession(avatar="avat_1", base_url="http://127.0.0.1:9", api_key="ah_test_x")
    with pytest.raises(RuntimeError, match="stop here"):
        async def start():
            await avatar.start(AgentSession(), FakeRoom(), livekit_url="ws://lk", livekit_api_key="key",
                               livekit_api_secret="secret-that-is-long-enough-for-hs256")

        run(start())
    claims = jwt.decode(captured["token"], "secret-that-is-long-enough-for-hs256", algorithms=["HS256"])
    assert captured["platform"] == "livekit" and captured["url"] == "ws://lk"
    assert claims["sub"] == "avatars-avatar-agent" and claims["kind"] == "agent"
    assert claims["attributes"] == {"lk.publish_on_behalf": "agent-7"}
    assert claims["video"]["room"] == "room-1" and claims["video"]["roomJoin"] is True
    assert claims["exp"] - claims["nbf"] <= 3600


def test_missing_configuration_is_a_clear_error(monkeypatch):
    for name in ("AVATARS_AVATAR_ID", "AVATARS_BASE_URL", "AVATARS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(avatars.AvatarsException, match="avatar"):
        avatars.AvatarSession(base_url="http://x", api_key="k")
    with pytest.raises(avatars.AvatarsException, match="base_url and api_key"):
        avatars.AvatarSession(avatar="avat_1")


def test_example_agent_in_a_real_job_and_job_shutdown_ends_the_session(lk_app, livekit_server, monkeypatch):
    """examples/livekit_agent.py run by a real livekit-agents worker (AgentServer, explicit dispatch): the
    job's avatar joins on the agent's behalf and publishes video; shutting the job down ends the session (user_requested), billed."""
    import importlib.util
    from pathlib import Path

    from livekit import api as lkapi
    from livekit.agents import AgentServer, JobExecutorType

    server, tenant = livekit_server, lk_app.tenant("growth")
    sdk = AvatarsClient(base_url=lk_app.base_url, api_key=tenant.api_key)
    avatar_id = sdk.upload_face(cbook.get_sample_data("grace_hopper.jpg").read(), filename="grace.jpg").avatar_id
    for name, value in {"AVATARS_AVATAR_ID": avatar_id, "AVATARS_BASE_URL": lk_app.base_url,
                        "AVATARS_API_KEY": tenant.api_key, "LIVEKIT_URL": server.url,
                        "LIVEKIT_API_KEY": server.api_key, "LIVEKIT_API_SECRET": server.api_secret}.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "livekit_agent_example", Path(__file__).resolve().parents[2] / "examples" / "livekit_agent.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    room_name = new_room_name()

    async def main():
        worker = AgentServer(job_executor_type=JobExecutorType.THREAD, ws_url=server.url, api_key=server.api_key,
                             api_secret=server.api_secret, port=0, num_idle_processes=0)
        worker.rtc_session(example.entrypoint, agent_name="plugin-test-example")
        running = asyncio.create_task(worker.run(devmode=True))
        lk = lkapi.LiveKitAPI(server.url.replace("ws", "http", 1), server.api_key, server.api_secret)
        try:
            await lk.room.create_room(lkapi.CreateRoomRequest(name=room_name))
            viewer = Viewer(server.url, token(server, "viewer", room_name), "")
            await viewer.join()
            await until(lambda: worker.id != "unregistered", 60, "the worker registered")
            await lk.agent_dispatch.create_dispatch(lkapi.CreateAgentDispatchRequest(
                agent_name="plugin-test-example", room=room_name))

            def job_agent():  # the job's own participant (the avatar, which joins after it, has the attribute)
                return next((p for p in viewer.room.remote_participants.values()
                             if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                             and "lk.publish_on_behalf" not in p.attributes), None)

            viewer.follow((await until(job_agent, 120, "the job's agent in the room")).identity)

            def active():
                page = sdk.list_sessions(status="active")
                return page.sessions[0] if page.sessions else None

            session = await until(lambda: active(), 120, "the job's avatar session")
            assert session.room.platform == "livekit"
            # The avatar joined the job's room on behalf of the job's agent (speech through it: the test above).
            found = await until(viewer.avatar, 60, "the avatar participant")
            assert found.identity == "avatars-avatar-agent"
            await until(lambda: len(viewer.video) >= 10, 60, "the avatar's video at the viewer")

            await worker.aclose()  # the worker shuts its job down (the room stays)

            def ended():
                s = sdk.get_session(session.session_id)
                return s if s.status == "ended" else None

            done = await until(ended, 60, "the session ended by the job's shutdown")
            assert done.end_reason == "user_requested" and done.billing.minutes >= 1
            await viewer.leave()
            await lk.room.delete_room(lkapi.DeleteRoomRequest(room=room_name))
        finally:
            await lk.aclose()
            await worker.aclose()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    run(main(), timeout=400)
    sdk.close()


def test_sdk_quickstart_example_runs(lk_app, tmp_path):
    """examples/sdk_quickstart.py (the README's SDK example) against a deployment with LiveKit (proxy)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tenant = lk_app.tenant("growth")
    photo = tmp_path / "grace.jpg"
    photo.write_bytes(cbook.get_sample_data("grace_hopper.jpg").read())
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AVATARS_BASE_URL": lk_app.base_url, "AVATARS_API_KEY": tenant.api_key}
    out = subprocess.run([sys.executable, str(root / "examples" / "sdk_quickstart.py"), str(photo)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("avatar avat_") and " started room ws" in lines[1]
    assert "event playback.started" in lines and "event playback.finished" in lines
    assert any(line.startswith("ended user_requested billed minutes 1") for line in lines)
    assert lines[-1] == "error 404 SESSION_NOT_FOUND"
