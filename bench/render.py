"""Benchmark of the default renderer's batch step.

    python -m bench.render                       # one 512x512 session on the CPU, one thread
    python -m bench.render --sessions 8 --device cuda --frames 200
    python -m bench.render --sweep 1,8,64,256,512 --device cuda   # one JSON line per N

Each session speaks (synthetic speech-like audio, all features and idle motion on), so the step does
all its per-frame work: audio slice + features, weights, blend, grid_sample, mouth interior, RGBA/I420
conversion (frames stay on the device). The avatar is a real photo run through the face pipeline
(matplotlib's grace_hopper.jpg) when its models are set up, else a synthetic rig. The last printed line
is one JSON object: device, width, height, sessions, fps_per_session, total_fps, step_p50_ms,
step_p99_ms (+ threads, format, frames).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from media.renderer.interface import FrameFormat


def _avatar():
    from media.renderer.cli import load_avatar

    return load_avatar("grace_hopper")


def run(n_sessions: int, device: str, width: int, height: int, fmt: FrameFormat, frames: int, warmup: int, avatar):
    from media.renderer.default import DisplacementRenderer
    from media.renderer.interface import OutputOptions
    from media.renderer.speech import synth_speech

    image, rig = avatar
    r = DisplacementRenderer(device)
    opts = OutputOptions(width=width, height=height, fps=25, sample_rate=48000, format=fmt)
    speech = synth_speech(max(4.0, (frames + warmup) / 25 + 1), 24000, seed=3)
    first = r.prepare(image, rig, opts, session_id="bench-0")
    r.add(first)
    for i in range(1, n_sessions):  # same avatar: reuse the built bases (building is not what we time)
        from media.renderer.default import DisplacementSession

        s = DisplacementSession(f"bench-{i}", opts, first.motion, first.framing, first.basis)
        r.add(s)
    for s in r.sessions:
        s.push_audio(speech.audio, speech.sample_rate)
        s.end_utterance()
    sync = (lambda: torch.cuda.synchronize(r.device)) if r.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        r.step()
    sync()
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        r.step()
        sync()
        times.append(time.perf_counter() - t0)
    t = np.array(times)
    mean = float(t.mean())
    return {
        "device": str(r.device) + (f" ({torch.cuda.get_device_name(r.device)})" if r.device.type == "cuda" else ""),
        "width": width,
        "height": height,
        "sessions": n_sessions,
        "fps_per_session": round(1.0 / mean, 2),
        "total_fps": round(n_sessions / mean, 2),
        "step_p50_ms": round(float(np.percentile(t, 50)) * 1e3, 3),
        "step_p99_ms": round(float(np.percentile(t, 99)) * 1e3, 3),
        "threads": torch.get_num_threads(),
        "format": fmt,
        "frames": frames,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--sweep", default=None, help="comma-separated session counts (one JSON line each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--format", default="rgba", choices=["rgba", "i420"])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one core)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    avatar = _avatar()
    counts = [int(x) for x in a.sweep.split(",")] if a.sweep else [a.sessions]
    for n in counts:
        print(json.dumps(run(n, a.device, a.width, a.height, a.format, a.frames, a.warmup, avatar)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
