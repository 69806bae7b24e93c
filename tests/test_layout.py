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
