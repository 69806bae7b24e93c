"""Session start and speech latency with real media (preview platform, CPU renderer).

    python -m bench.session_start [--sessions 20]

For each session (the warm pool holds a worker before each create): create → first rendered frame
(wall clock, the worker reports when its first frame was delivered), then one utterance through the
session WebSocket: audio in → first frame whose commanded mouth opening shows motion, and the A/V
offset of the speech frames (delivery time versus the audio timeline). The last line is the JSON.
"""
from __future__ import annotations

import argparse
import base64
import json
import time
from typing import Any

import ray
from websockets.sync.client import connect

from media.renderer.speech import synth_speech
from bench.harness import local_platform, percentile
from core import ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--pool", type=int, default=2)
    args = ap.parse_args()

    first_frame: list[float] = []
    audio_to_mouth: list[float] = []
    av_offsets: list[float] = []
    create_ms: list[float] = []
    with local_platform(worker_media="rooms", enable_preview_platform=True, warm_pool_size=args.pool,
                        placement_timeout_s=30.0, worker_start_timeout_s=120.0, slots=args.pool + 2) as p:
        from pipelines.faces.seed import seed_public_avatars

        avatar = seed_public_avatars(p.settings)[0]
        headers = p.account("enterprise", max_concurrent_sessions=100, included_minutes=100_000)
        synth = synth_speech(2.0, sample_rate=24000, seed=1)
        onset = int(synth.syllables[0][0] * synth.sample_rate)  # start at the first voiced sample
        speech = synth.audio[onset:].astype("<i2").tobytes()
        ws_url = p.base_url.replace("http://", "ws://") + "/v1/ws"
        for i in range(args.sessions):
            if not p.wait_pool(args.pool, timeout=120):
                print("warning: warm pool not full", flush=True)
            t0 = time.time()
            r = p.http.post("/v1/sessions", json={"avatar": avatar, "aspect_ratio": "1:1",
                                                  "room": {"platform": "preview"}}, headers=headers)
            create_ms.append((time.time() - t0) * 1000)
            assert r.status_code == 201, r.text
            sid, token = r.json()["session"]["session_id"], r.json()["session"]["session_token"]
            worker: Any = ray.get_actor(ids.worker_name(sid), namespace=p.settings.ray_namespace)
            deadline = time.monotonic() + 30
            info = ray.get(worker.info.remote(), timeout=30)
            while info["first_frame_at"] is None and time.monotonic() < deadline:
                time.sleep(0.01)
                info = ray.get(worker.info.remote(), timeout=30)
            first_frame.append((info["first_frame_at"] - t0) * 1000)

            with connect(ws_url, open_timeout=30) as ws:
                ws.send(json.dumps({"type": "session.init", "session_id": sid, "session_token": token}))
                json.loads(ws.recv(timeout=30))
                ws.send(json.dumps({"type": "audio", "audio": base64.b64encode(speech).decode(),
                                    "sample_rate": 24000}))
                ws.send(json.dumps({"type": "audio.end"}))
                while json.loads(ws.recv(timeout=30))["type"] != "playback.finished":
                    pass
            info = ray.get(worker.info.remote(), timeout=30)
            audio_to_mouth += info["audio_to_mouth_ms"]
            av_offsets += info["av_offsets_ms"]
            p.http.post(f"/v1/sessions/{sid}/end", headers=headers)
            print(f"{i + 1}: create {create_ms[-1]:.0f} ms, first frame {first_frame[-1]:.0f} ms, "
                  f"audio→mouth {info['audio_to_mouth_ms']}", flush=True)
    abs_offsets = [abs(x) for x in av_offsets]
    print(json.dumps({
        "sessions": args.sessions, "device": "cpu", "size": "512x512", "fps": 25,
        "create_p50_ms": percentile(create_ms, 50),
        "first_frame_p50_ms": percentile(first_frame, 50), "first_frame_p99_ms": percentile(first_frame, 99),
        "audio_to_mouth_p50_ms": percentile(audio_to_mouth, 50),
        "audio_to_mouth_p99_ms": percentile(audio_to_mouth, 99),
        "av_offset_ms": percentile(av_offsets, 50), "av_offset_abs_p99_ms": percentile(abs_offsets, 99),
    }))


if __name__ == "__main__":
    main()
