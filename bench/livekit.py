"""Latency and capacity of LiveKit sessions, measured at a viewer in the room (what a user sees).

    python -m bench.livekit [--sessions 10] [--max-level 8] [--hold 10]

Starts everything itself: a LiveKit server (``cluster.livekit_local``), local Ray + Serve with real workers
(CPU renderer), SQLite. Each session runs in its own room with a real agent (livekit-agents'
``DataStreamAudioOutput`` on an ``rtc.Room``) and a viewer (``bench.viewer``), created through the HTTP API
with a vendor-plugin-shaped token.

Latency phase, one session at a time (the warm pool holds a worker before each create):
- create → first decoded video frame at the viewer (with the create's own answer time and the viewer's
  video subscription, to show where it went: ``create_p50_ms``, ``video_subscribed_p50_ms``);
- the agent's first speech byte (the utterance starts at its first voiced sample) → first decoded frame at
  the viewer whose mouth box is clearly darker than at rest (the mouth opened), for two utterances per
  session: ``audio_to_mouth_*`` over the second ones (an agent in conversation), the first ones apart
  (``audio_to_mouth_first_utterance_p50_ms``: the agent's very first data in the room);
- A/V offset at the viewer: arrival of that frame − arrival of the first audio with sound in it (positive:
  sound before picture; the tolerance is +40/−100 ms).
Capacity phase: 1, 2, 3, ... idle 512×512 25 fps sessions at once, each with its agent and viewer, held for
``--hold`` seconds; a level passes when every viewer got ≥ 99% of the frames due and < 1% arrived late
(gap > 2 frame intervals). ``max_sessions`` is the highest passing level. CPU seconds per session-second:
the session workers' processes (render + encode + publish) over the hold at the highest level run.
The viewers and agents run in this process, on the same 2 cores: each level also reports how busy the
machine was (``machine_busy``, 1.0 = every core) and the cores each part of the stack kept busy
(``cores_by_part``: workers, the LiveKit server, this process's viewers and agents, Ray/Serve, the rest),
which says what a level's frames waited for. The last line is the JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from livekit import rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput

from media.renderer.speech import synth_speech
from bench.harness import local_platform, percentile
from bench.viewer import Viewer, first_mouth_motion
from cluster import livekit_local
from cluster.livekit_local import dev_token as token

AGENT = "bench-agent"
AVATAR = "bench-avatar-agent"
FPS = 25


async def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


class Session:
    """One session in its own room: an agent, a viewer, and the session created through the API."""

    def __init__(self, platform, server, avatar: str, headers: dict, n: int) -> None:
        self.p, self.server, self.avatar, self.headers = platform, server, avatar, headers
        self.room_name = f"bench-{n}-{int(time.time() * 1000)}"
        self.agent = rtc.Room()
        self.viewer = Viewer(server.url, token(server, "viewer", self.room_name), AGENT)
        self.out: DataStreamAudioOutput | None = None
        self.sid: str | None = None
        self.t_create = self.t_created = 0.0

    async def join(self) -> None:
        await self.agent.connect(self.server.url, token(self.server, AGENT, self.room_name, kind="agent"))
        self.out = DataStreamAudioOutput(self.agent, destination_identity=AVATAR)
        await self.viewer.join()

    async def create(self) -> None:
        avatar_token = token(self.server, AVATAR, self.room_name, kind="agent",
                             attributes={"lk.publish_on_behalf": AGENT})
        self.t_create = time.monotonic()
        r = await asyncio.to_thread(self.p.http.post, "/v1/sessions", json={
            "avatar": self.avatar, "aspect_ratio": "1:1",
            "room": {"platform": "livekit", "url": self.server.url, "token": avatar_token}}, headers=self.headers)
        if r.status_code != 201:
            raise RuntimeError(f"create failed: {r.status_code} {r.text}")
        self.sid = r.json()["session"]["session_id"]
        self.t_created = time.monotonic()

    async def close(self) -> None:
        if self.sid:
            await asyncio.to_thread(self.p.http.post, f"/v1/sessions/{self.sid}/end", headers=self.headers)
        await self.viewer.leave()
        await self.agent.disconnect()


async def latency_phase(p, server, avatar, headers, sessions: int, pool: int, utterances: int = 2) -> dict:
    first_frame: list[float] = []
    audio_to_mouth: list[float] = []
    first_utterance: list[float] = []
    av_offsets: list[float] = []
    create_ms: list[float] = []
    subscribed_ms: list[float] = []
    synth = synth_speech(2.0, sample_rate=24000, seed=1)
    onset = int(synth.syllables[0][0] * synth.sample_rate)
    speech = synth.audio[onset:]
    chunk = 2400  # 100 ms frames, as a TTS stream arrives
    for i in range(sessions):
        await asyncio.to_thread(p.wait_pool, pool, 120)
        s = Session(p, server, avatar, headers, i)
        await s.join()
        await s.create()
        if not await until(lambda: s.viewer.video, 30):
            raise RuntimeError("no video reached the viewer")
        first_frame.append((s.viewer.video[0].t - s.t_create) * 1000)
        # where the first frame's time went: the create's answer, the viewer's video subscription
        create_ms.append((s.t_created - s.t_create) * 1000)
        subscribed_ms.append((s.viewer.subscribed_at.get("video", float("nan")) - s.t_create) * 1000)
        await asyncio.sleep(1.5)  # idle: the avatar at rest
        s.viewer.locate_mouth()
        t_rest = time.monotonic()
        await asyncio.sleep(1.5)
        baseline = [v for _, v in s.viewer.mouth_series(t_rest)]
        assert s.out is not None  # (made by join)
        for u in range(utterances):
            t_audio = time.monotonic()  # the first speech byte leaves the agent now
            for k in range(0, speech.size, chunk):
                part = speech[k: k + chunk]
                await s.out.capture_frame(rtc.AudioFrame(part.tobytes(), 24000, 1, part.size))
            s.out.flush()
            await asyncio.sleep(3.0)  # the utterance plays out (2 s) and the mouth rests again
            t_mouth = first_mouth_motion(s.viewer.mouth_series(t_audio), baseline)
            t_sound = next((t for t in s.viewer.sound_times if t >= t_audio), None)
            if t_mouth is not None:
                (audio_to_mouth if u else first_utterance).append((t_mouth - t_audio) * 1000)
                if t_sound is not None:
                    av_offsets.append((t_mouth - t_sound) * 1000)
            print(f"{i + 1}.{u + 1}: first frame {first_frame[-1]:.0f} ms (created {create_ms[-1]:.0f}, video "
                  f"subscribed {subscribed_ms[-1]:.0f}), audio→mouth "
                  f"{(t_mouth - t_audio) * 1000 if t_mouth else float('nan'):.0f} ms, "
                  f"A/V {(t_mouth - t_sound) * 1000 if t_mouth and t_sound else float('nan'):.0f} ms", flush=True)
        await s.close()
    return {
        "first_frame_p50_ms": percentile(first_frame, 50), "first_frame_p99_ms": percentile(first_frame, 99),
        "audio_to_mouth_p50_ms": percentile(audio_to_mouth, 50),
        "audio_to_mouth_p99_ms": percentile(audio_to_mouth, 99),
        "av_offset_ms": percentile(av_offsets, 50), "av_offset_p99_abs_ms": percentile([abs(x) for x in av_offsets], 99),
        "audio_to_mouth_first_utterance_p50_ms": percentile(first_utterance, 50),
        "create_p50_ms": percentile(create_ms, 50), "video_subscribed_p50_ms": percentile(subscribed_ms, 50),
        "latency_sessions": sessions, "mouth_detected": len(audio_to_mouth) + len(first_utterance),
    }


def worker_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any("SessionWorker" in part for part in (proc.info["cmdline"] or [])):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _group(proc: psutil.Process, me: int) -> str:
    """Which part of the stack a process is: where a level's CPU goes on the shared cores."""
    if proc.pid == me:
        return "bench_viewers_agents"  # the viewers' decoders and the agents run in this process
    cmd = " ".join(proc.info["cmdline"] or [])
    if "SessionWorker" in cmd:
        return "workers"
    if "livekit-server" in (proc.info["name"] or "") or "livekit-server" in cmd:
        return "livekit_server"
    if "ray" in cmd or "raylet" in (proc.info["name"] or "") or "gcs_server" in (proc.info["name"] or ""):
        return "ray_serve_other"
    return "rest_of_machine"


def cpu_by_group() -> dict[int, tuple[str, float]]:
    """pid → (group, CPU seconds so far) for every process on the machine."""
    me, out = psutil.Process().pid, {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            t = proc.cpu_times()
            out[proc.pid] = (_group(proc, me), t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def cores_used_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                        elapsed: float) -> dict[str, float]:
    """Cores each group kept busy between two snapshots (a process started in between counts whole)."""
    used: dict[str, float] = {}
    for pid, (group, cpu) in after.items():
        used[group] = used.get(group, 0.0) + (cpu - before.get(pid, (group, 0.0))[1])
    return {g: round(v / elapsed, 3) for g, v in sorted(used.items())}


async def capacity_phase(p, server, avatar, headers, max_level: int, hold: float) -> dict:
    sessions: list[Session] = []
    levels, best, cpu_per_session_s = [], 0, None
    try:
        for level in range(1, max_level + 1):
            s = Session(p, server, avatar, headers, 100 + level)
            await s.join()
            await s.create()
            sessions.append(s)
            if not await until(lambda: all(len(x.viewer.video) > FPS for x in sessions), 60):
                levels.append({"sessions": level, "ok": False, "reason": "no video"})
                break
            await asyncio.sleep(2.0)  # settle
            procs = worker_processes()
            cpu0, t0 = cpu_seconds(procs), time.monotonic()
            groups0, machine0 = cpu_by_group(), psutil.cpu_times()
            marks = [len(x.viewer.video) for x in sessions]
            await asyncio.sleep(hold)
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(procs) - cpu0
            groups, machine = cores_used_by_group(groups0, cpu_by_group(), elapsed), psutil.cpu_times()
            busy = (sum(machine) - machine.idle - sum(machine0) + machine0.idle) / (sum(machine) - sum(machine0))
            received, late = [], []
            for x, m in zip(sessions, marks):
                times = [v.t for v in x.viewer.video[m:]]
                received.append(len(times) / (elapsed * FPS))
                gaps = np.diff(times) if len(times) > 1 else np.array([])
                late.append(float((gaps > 2.0 / FPS).sum()) / max(1, len(times)))
            ok = min(received) >= 0.99 and max(late) < 0.01
            per_session = cpu / (elapsed * level)
            levels.append({"sessions": level, "ok": ok, "min_received": round(min(received), 4),
                           "max_late": round(max(late), 4), "cpu_s_per_session_s": round(per_session, 3),
                           "machine_busy": round(busy, 3), "cores_by_part": groups})
            print(f"level {level}: {levels[-1]}", flush=True)
            if ok:
                best, cpu_per_session_s = level, per_session
            else:
                break
    finally:
        for s in sessions:
            await s.close()
    return {"max_sessions": best, "cpu_s_per_session_s": round(cpu_per_session_s, 3) if cpu_per_session_s else None,
            "levels": levels}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10, help="sessions in the latency phase")
    ap.add_argument("--max-level", type=int, default=8, help="most concurrent sessions tried")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds each capacity level is held")
    ap.add_argument("--pool", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="avatars-bench-lk-") as tmp:
        server = livekit_local.start(Path(tmp) / "livekit")
        try:
            with local_platform(worker_media="rooms", warm_pool_size=args.pool, placement_timeout_s=30.0,
                                worker_start_timeout_s=120.0, slots=args.max_level + args.pool + 2,
                                render_fps=FPS, room_empty_grace_s=30.0) as p:
                from pipelines.faces.seed import seed_public_avatars

                avatar = seed_public_avatars(p.settings)[0]
                headers = p.account("enterprise", max_concurrent_sessions=100, included_minutes=100_000)

                async def run() -> dict:
                    result = await latency_phase(p, server, avatar, headers, args.sessions, args.pool)
                    result.update(await capacity_phase(p, server, avatar, headers, args.max_level, args.hold))
                    return result

                result = asyncio.run(run())
        finally:
            livekit_local.stop(server)
    print(json.dumps({"size": "512x512", "fps": FPS, "device": "cpu", **result}))


if __name__ == "__main__":
    main()
