"""How a LiveKit room ends the session: agent left, room empty after the grace, connection lost, join
failures (fast, as ``RoomConnectFailed``), and a clean leave."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest
from livekit import rtc

from media.renderer import DisplacementRenderer
from media.rooms.livekit_room import LiveKitRoom
from media.rooms.options import LiveKitOptions, RoomTimeouts
from core.errors import RoomConnectFailed
from core.status import EndReason

from .conftest import run, wait_until
from .fake_livekit import FakeServer
from .harness import AGENT, AVATAR, ROOM, SMALL, Agent, avatar_spec, started_room


def _room(server, avatar, spec=None, **kw):
    image, rig = avatar
    renderer = DisplacementRenderer("cpu")
    lk = LiveKitRoom(spec or avatar_spec(), image, rig, renderer, room_factory=server.room_factory, output=SMALL, **kw)
    return lk, renderer


async def _closed_within(lk, timeout):
    return await asyncio.wait_for(lk.wait_closed(), timeout)


def test_agent_leaving_ends_the_session_as_agent_left(avatar):
    async def main():
        server = FakeServer()
        agent = await Agent(server).join()
        _human = await Agent(server, "user-1", kind="standard").join()  # keeps the room non-empty
        lk, renderer = _room(server, avatar)
        await lk.connect()
        await started_room(lk)
        assert [s["state"] for s in server.states(AVATAR)][0] == "connected"
        t = time.monotonic()
        await agent.leave()
        assert await _closed_within(lk, 2.0) == EndReason.AGENT_LEFT
        assert time.monotonic() - t < 0.5  # at once, not after the empty-room grace
        await lk.close()
        assert server.states(AVATAR)[-1] == {"state": "disconnected", "reason": "agent_left"}
        assert server.member(ROOM, AVATAR) is None  # we left the room
        assert renderer.sessions == ()  # and the render session is gone
        await lk.close()  # idempotent

    run(main())


def test_being_removed_by_the_agent_ends_as_agent_left(avatar):
    async def main():
        server = FakeServer()
        await Agent(server).join()
        lk, _ = _room(server, avatar)
        await lk.connect()
        await started_room(lk)
        server.kick(AVATAR, ROOM)  # what livekit-agents' AvatarSession.aclose() does via the server API
        assert await _closed_within(lk, 2.0) == EndReason.AGENT_LEFT
        await lk.close()

    run(main())


def test_room_emptying_ends_as_room_empty_after_the_grace(avatar):
    async def main():
        server = FakeServer()
        human = await Agent(server, "user-1", kind="standard").join()  # the agent never comes
        lk, _ = _room(server, avatar, options=LiveKitOptions(timeouts=RoomTimeouts(empty_grace_s=0.3)))
        await lk.connect()
        await human.leave()
        await wait_until(lambda: lk.endings._empty_task is not None, 5, "the empty-room grace started")
        back = await Agent(server, "user-1", kind="standard").join()  # back within the grace: no end
        await wait_until(lambda: lk.endings._empty_task is None, 5, "the grace cancelled by the return")
        await asyncio.sleep(0.5)  # past the 0.3 s grace: proves the cancelled grace does not end it
        assert not lk.endings.closed.is_set()
        t = time.monotonic()
        await back.leave()
        assert await _closed_within(lk, 3.0) == EndReason.ROOM_EMPTY
        assert time.monotonic() - t >= 0.28  # not before the grace
        await lk.close()
        assert server.states(AVATAR)[-1] == {"state": "disconnected", "reason": "room_empty"}

    run(main())


def test_nobody_ever_joining_ends_as_room_empty(avatar):
    async def main():
        server = FakeServer()
        lk, _ = _room(server, avatar, options=LiveKitOptions(timeouts=RoomTimeouts(empty_grace_s=0.2)))
        await lk.connect()
        assert await _closed_within(lk, 3.0) == EndReason.ROOM_EMPTY
        await lk.close()

    run(main())


def test_lost_connection_ends_the_session_unless_regained_in_time(avatar):
    async def main():
        server = FakeServer()
        await Agent(server).join()
        lk, _ = _room(server, avatar, options=LiveKitOptions(timeouts=RoomTimeouts(reconnect_s=0.3)))
        await lk.connect()
        await started_room(lk)
        lk.room.simulate_connection_loss()
        await wait_until(lambda: lk.endings._lost_task is not None, 5, "the reconnect timer started")
        lk.room.simulate_reconnected()  # regained in time: the session goes on
        await wait_until(lambda: lk.endings._lost_task is None, 5, "the reconnect timer cancelled")
        await asyncio.sleep(0.5)  # past the 0.3 s reconnect timeout: proves the cancelled timer does not end it
        assert not lk.endings.closed.is_set()
        lk.room.simulate_connection_loss()  # not regained
        assert await _closed_within(lk, 3.0) == EndReason.CONNECTION_LOST
        await lk.close()

    run(main())


def test_server_dropping_us_ends_as_connection_lost(avatar):
    async def main():
        server = FakeServer()
        await Agent(server).join()
        lk, _ = _room(server, avatar)
        await lk.connect()
        lk.room._server_disconnect(rtc.DisconnectReason.SIGNAL_CLOSE)
        assert await _closed_within(lk, 2.0) == EndReason.CONNECTION_LOST
        await lk.close()

    run(main())


def test_watchdog_ends_what_a_server_restart_leaves_without_events(avatar):
    """A server restart can leave the SDK's view without the usual events: the agent gone without a
    participant_disconnected, the connection down without a reconnecting. The watchdog ends both."""
    async def main():
        server = FakeServer()
        await Agent(server).join()
        _human = await Agent(server, "user-1", kind="standard").join()  # the room is not empty
        lk, _ = _room(server, avatar,
                      options=LiveKitOptions(timeouts=RoomTimeouts(empty_grace_s=5.0, reconnect_s=0.2)))
        await lk.connect()
        await started_room(lk)
        t = time.monotonic()
        lk.check_health(t)
        assert lk._agent_seen
        lk.room._remote.pop(AGENT)  # vanished from the SDK's view, no event
        lk.check_health(t + 1.0)
        lk.check_health(t + 4.9)
        assert not lk.endings.closed.is_set()  # within the grace: it may come back
        lk.check_health(t + 6.1)
        assert await _closed_within(lk, 1.0) == EndReason.AGENT_LEFT
        await lk.close()

        lk2, _ = _room(server, avatar,
                       options=LiveKitOptions(timeouts=RoomTimeouts(empty_grace_s=5.0, reconnect_s=0.2)))
        await lk2.connect()
        await started_room(lk2)
        # after the tracks went out (cut before, the publication itself fails: media_failed, another path)
        await wait_until(lambda: lk2.runner.published, 10, "tracks published")
        lk2.room._connected = False  # down, and the SDK said nothing
        assert await _closed_within(lk2, 5.0) == EndReason.CONNECTION_LOST
        await lk2.close()

    run(main())


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("case", ["closed_port_real_sdk", "unreachable_fake", "bad_token", "no_url"])
def test_first_join_failure_raises_room_connect_failed_fast(avatar, case):
    async def main():
        server = FakeServer()
        image, rig = avatar
        renderer = DisplacementRenderer("cpu")
        spec = avatar_spec()
        factory = server.room_factory
        if case == "closed_port_real_sdk":
            spec.room_url, factory = f"ws://127.0.0.1:{_closed_port()}", None  # the real livekit.rtc.Room
        elif case == "unreachable_fake":
            spec.room_url = "ws://unreachable.invalid"
        elif case == "bad_token":
            spec.room_token = "not-a-jwt"
        else:
            spec.room_url = None
        lk = LiveKitRoom(spec, image, rig, renderer, LiveKitOptions(timeouts=RoomTimeouts(connect_s=5.0)),
                         room_factory=factory, output=SMALL)
        t = time.monotonic()
        with pytest.raises(RoomConnectFailed) as info:
            await lk.connect()
        elapsed = time.monotonic() - t
        print(f"{case}: RoomConnectFailed after {elapsed * 1000:.0f} ms: {info.value}")
        assert elapsed < 2.0
        assert spec.room_token not in str(info.value)  # the secret never lands in an error
        assert renderer.sessions == ()  # nothing left behind: released before the error is raised

    run(main())


def test_join_timeout_is_bounded(avatar):
    async def main():
        class HangingRoom(FakeServer().room_factory().__class__):
            async def connect(self, url, token, options=None):
                await asyncio.sleep(3600)  # the behaviour under test: a join that never answers

        server = FakeServer()
        image, rig = avatar
        lk = LiveKitRoom(avatar_spec(), image, rig, DisplacementRenderer("cpu"),
                         LiveKitOptions(timeouts=RoomTimeouts(connect_s=0.3)), room_factory=lambda: HangingRoom(server),
                         output=SMALL)
        t = time.monotonic()
        with pytest.raises(RoomConnectFailed, match="timed out"):
            await lk.connect()
        assert time.monotonic() - t < 1.5

    run(main())


def test_a_stalled_audio_capture_does_not_hold_the_pictures_back():
    """LiveKit's native audio capture can stall under CPU starvation (the video stopped for ~10 s after a
    clear): the runner stops awaiting a speech frame after AUDIO_PUSH_TIMEOUT_S, counts it, and goes on."""
    from livekit.agents.voice.avatar import AvatarOptions

    from media.rooms.livekit_room import AvatarTrackRunner

    class Gen:
        epoch = 0

    class Room:  # what aclose touches
        def off(self, *_):
            pass

    class Receiver:
        async def aclose(self):
            pass

    async def main():
        runner = AvatarTrackRunner(Room(), audio_recv=Receiver(), video_gen=Gen(),
                                   options=AvatarOptions(video_width=64, video_height=64, video_fps=25,
                                                         audio_sample_rate=48000, audio_channels=1))
        pushed = []

        async def push(frame, timestamp=None):
            pushed.append(type(frame).__name__)
            if isinstance(frame, rtc.AudioFrame):
                await asyncio.Event().wait()  # the native capture never completes

        runner._push_unguarded = push
        runner.AUDIO_PUSH_TIMEOUT_S = 0.05
        speech = rtc.AudioFrame(b"\0\0" * 1920, 48000, 1, 1920)
        await asyncio.wait_for(runner._push_guarded(speech), 30)
        picture = rtc.VideoFrame(64, 64, rtc.VideoBufferType.RGBA, b"\0" * 64 * 64 * 4)
        await asyncio.wait_for(runner._push_guarded(picture), 30)
        await asyncio.wait_for(runner._push_guarded(speech), 30)
        assert pushed == ["AudioFrame", "VideoFrame", "AudioFrame"] and runner.audio_push_timeouts == 2
        await runner.aclose()

    run(main())
