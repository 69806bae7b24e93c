"""Safe decoding of untrusted image bytes to an RGB uint8 array.

Order of checks, cheapest first, nothing decoded before it is known to be safe:

1. size of the input (``MAX_BYTES``, 10 MB) -> ``ImageTooLarge``;
2. format sniffed from the magic bytes, not from a name or a declared type: JPEG, PNG, GIF, WebP only
   -> otherwise ``UnsupportedImage``; Pillow is then restricted to that one format;
3. pixel count from the header only (``MAX_PIXELS``, 40 MP) -> ``ImageTooLarge``; a decompression bomb
   (a tiny file claiming 20000x20000) is refused before a single pixel is allocated;
4. decode (GIF: first frame), EXIF orientation applied, transparency composited on white, RGB.

Corrupt or truncated data -> ``UnsupportedImage`` with a message saying the file is damaged.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from core.errors import ImageTooLarge, UnsupportedImage

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000

_SUGGESTION = "Upload a JPEG, PNG, GIF or WebP image"


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name for these magic bytes, or ``None`` if not an accepted format."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode untrusted ``data`` to an (H, W, 3) RGB uint8 array, upright per its EXIF orientation."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("decode_image expects bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"The image is {len(data)} bytes; the limit is {max_bytes} bytes",
            details={"bytes": len(data), "max_bytes": max_bytes},
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedImage(suggestion=_SUGGESTION)
    try:
        with warnings.catch_warnings():
            # Our own pixel cap (below) is stricter than Pillow's bomb warning; keep the warning quiet.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                width, height = im.size  # header only: nothing decoded yet
                if width <= 0 or height <= 0:
                    raise UnsupportedImage("The image has no pixels", suggestion=_SUGGESTION)
                if width * height > max_pixels:
                    raise _too_many_pixels(width, height, max_pixels)
                if fmt == "GIF":
                    im.seek(0)
                im.load()
                return _to_rgb(ImageOps.exif_transpose(im) or im)
    except (ImageTooLarge, UnsupportedImage):
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own cap tripped while opening the header
        raise ImageTooLarge(f"The image has too many pixels ({exc})") from None
    except MemoryError:
        raise ImageTooLarge("The image is too large to decode") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image
        raise UnsupportedImage(
            f"The {fmt} image is damaged or truncated and cannot be decoded",
            suggestion=_SUGGESTION,
            details={"format": fmt.lower(), "reason": type(exc).__name__},
        ) from None


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); the limit is "
        f"{max_pixels / 1e6:.0f} MP",
        details={"width": width, "height": height, "max_pixels": max_pixels},
    )


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) or 1.0
        im = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)
