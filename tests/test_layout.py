"""The layout is the architecture: the media package runs without Ray, the actors package holds the actors."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import media

ROOT = Path(__file__).resolve().parents[1]


def test_media_imports_no_ray_and_no_actors():
    modules = [m.name for m in pkgutil.walk_packages(media.__path__, "media.")]
    assert "media.rooms.livekit_room" in modules and "media.renderer.default" in modules
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'actors')))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"media pulled in: {out.stdout.strip()}"


def test_media_core_and_the_daily_and_preview_adapters_import_no_livekit():
    """LiveKit types stay inside the LiveKit adapter (livekit_room, livekit_generator) and the proxy
    platform's server API (proxy): the media session, the renderer and the other adapters run without them."""
    livekit_modules = {"media.rooms.livekit_room", "media.rooms.livekit_generator", "media.rooms.proxy"}
    modules = [m.name for m in pkgutil.walk_packages(media.__path__, "media.") if m.name not in livekit_modules]
    assert {"media.session", "media.rooms.daily_room", "media.rooms.preview_room", "media.rooms.factory"} <= set(modules)
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "print(','.join(sorted(m for m in sys.modules if m == 'livekit' or m.startswith('livekit.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"imported LiveKit: {out.stdout.strip()[:500]}"
