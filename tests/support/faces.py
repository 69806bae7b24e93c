"""Real photos as upload bytes, a local image HTTP server, and what an API has stored (rows and blobs)."""
from __future__ import annotations

import io
import threading
import zlib
import struct
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def encode(rgb: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def grace() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def cat() -> np.ndarray:
    from skimage import data

    return data.chelsea()


def two_faces() -> np.ndarray:
    """Two real faces side by side (each a prominent subject)."""
    import cv2

    a = astronaut()[20:300, 120:360]
    g = cv2.resize(grace()[60:420, 80:440], (240, 280))
    return np.ascontiguousarray(np.concatenate([a, g], axis=1))


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A small, valid 1-bit PNG claiming width x height pixels (all black)."""
    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    raw = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def variant(rgb: np.ndarray, i: int) -> bytes:
    """A distinct, still clearly single-face JPEG of ``rgb`` (flip, crop, scale, brightness, quality)."""
    im = Image.fromarray(rgb)
    if i % 2:
        im = ImageOps.mirror(im)
    w, h = im.size
    c = (i // 2) % 5
    im = im.crop((c * 3, c * 2, w - c * 3, h - c * 2))
    scale = 1.0 + ((i // 10) % 4) * 0.1
    if scale != 1.0:
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BILINEAR)
    im = ImageEnhance.Brightness(im).enhance(0.9 + ((i // 40) % 5) * 0.05)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85 + (i % 7))
    return buf.getvalue()


@contextmanager
def image_server(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``files`` (path -> bytes) on 127.0.0.1 from a thread; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def stored_state(api) -> tuple[int, list[str]]:
    """(number of avatar rows, blob keys) of an ApiUnderTest."""
    from sqlalchemy import func, select

    from core.db.models import Avatar
    from core.storage import BlobStore

    with api.store.db.read() as s:
        rows = int(s.scalar(select(func.count()).select_from(Avatar)))
    return rows, BlobStore(api.settings.storage_url).list()
