"""Decoding untrusted bytes: formats, limits, bombs, damage, EXIF orientation."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import ImageTooLarge, UnsupportedImage
from pipelines.faces.decode import MAX_BYTES, decode_image, sniff_format

from .helpers import encode


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < tol


@pytest.mark.parametrize(
    "fmt,kwargs,tol",
    [("JPEG", {"quality": 95}, 4), ("PNG", {}, 0.01), ("WEBP", {"lossless": True}, 0.01)],
)
def test_accepted_formats_decode_to_rgb(astronaut, fmt, kwargs, tol):
    data = encode(astronaut, fmt, **kwargs)
    out = decode_image(data)
    assert out.dtype == np.uint8 and out.shape == (512, 512, 3)
    assert _close(out, astronaut, tol)


def test_gif_first_frame(astronaut):
    frames = [Image.fromarray(astronaut), Image.new("RGB", (512, 512), (0, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    out = decode_image(buf.getvalue())
    assert out.shape == (512, 512, 3)
    assert _close(out, astronaut, 20)  # palette quantisation, but clearly the first frame, not the black one


def test_transparency_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    rgba[:4, :, :] = (255, 0, 0, 255)  # opaque red top half
    out = decode_image(encode(rgba, "PNG"))
    assert out.shape == (8, 8, 3)
    assert (out[:4] == (255, 0, 0)).all()
    assert (out[4:] == 255).all()


def test_grayscale_and_16_bit_become_rgb():
    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    out = decode_image(encode(gray16, "PNG"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] < out[-1, -1, 0]


@pytest.mark.parametrize(
    "data",
    [
        b"BM" + b"\0" * 64,  # BMP
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        b"II*\0" + b"\0" * 64,  # TIFF
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"",
        b"\x00\x00\x01\x00",  # ICO
    ],
    ids=["bmp", "pdf", "tiff", "svg", "empty", "ico"],
)
def test_other_types_are_unsupported(data):
    with pytest.raises(UnsupportedImage) as err:
        decode_image(data)
    assert err.value.status == 415 and err.value.code == "UNSUPPORTED_IMAGE"


def test_real_bmp_file_is_unsupported(astronaut):
    with pytest.raises(UnsupportedImage):
        decode_image(encode(astronaut, "BMP"))


def test_corrupt_and_truncated_images(astronaut):
    jpeg = encode(astronaut, "JPEG")
    png = encode(astronaut, "PNG")
    cases = [
        b"\xff\xd8\xff\xe0" + b"garbage" * 100,  # JPEG magic, no JPEG
        jpeg[: len(jpeg) // 2],  # truncated JPEG
        png[: len(png) // 2],  # truncated PNG
        png[:8] + b"\0" * 200,  # PNG signature, broken chunks
        b"RIFF\x10\0\0\0WEBPVP8 " + b"\x01" * 20,  # WebP header, broken bitstream
    ]
    for data in cases:
        with pytest.raises(UnsupportedImage) as err:
            decode_image(data)
        assert err.value.code == "UNSUPPORTED_IMAGE"
        assert "damaged" in err.value.message or "not a JPEG" in err.value.message


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width x height, all black, built row by row (~ tens of KB)."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Fail the test if anything decodes pixels (the refusal must come from the header alone)."""

    def boom(self, *a, **k):
        raise AssertionError(f"pixels of a {self.size} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)


def test_png_bomb_is_refused_from_the_header(no_pixel_decoding):
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 1_000_000  # tiny file ...
    with pytest.raises(ImageTooLarge) as err:  # ... claiming 400 megapixels
        decode_image(bomb)
    assert err.value.status == 413 and err.value.code == "IMAGE_TOO_LARGE"


def test_pixel_cap_is_ours_not_only_pillows(no_pixel_decoding):
    # 42 MP: above our 40 MP cap, below Pillow's own decompression-bomb threshold.
    with pytest.raises(ImageTooLarge) as err:
        decode_image(png_bomb(7000, 6000))
    assert err.value.details == {"width": 7000, "height": 6000, "max_pixels": 40_000_000}


def test_pixel_cap_leaves_normal_images_alone():
    out = decode_image(png_bomb(2000, 1500))  # 3 MP of the same construction decodes fine
    assert out.shape == (1500, 2000, 3)


def test_jpeg_header_claiming_huge_size_is_refused(astronaut, no_pixel_decoding):
    data = bytearray(encode(astronaut, "JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    with pytest.raises(ImageTooLarge):
        decode_image(bytes(data))


def test_more_than_10_mb_is_refused():
    data = b"\xff\xd8\xff\xe0" + b"\0" * MAX_BYTES
    with pytest.raises(ImageTooLarge) as err:
        decode_image(data)
    assert err.value.details["max_bytes"] == 10 * 1024 * 1024


def test_sniffing_uses_magic_bytes_not_extensions(astronaut):
    assert sniff_format(encode(astronaut, "PNG")) == "PNG"
    assert sniff_format(encode(astronaut, "JPEG")) == "JPEG"
    assert sniff_format(encode(astronaut, "WEBP")) == "WEBP"
    assert sniff_format(encode(astronaut, "GIF")) == "GIF"
    assert sniff_format(encode(astronaut, "BMP")) is None


def exif_rotated_jpeg(upright: np.ndarray) -> bytes:
    """The photo stored sideways (as a phone does) with EXIF Orientation 6: 'rotate 90 CW to view'."""
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # upright turned 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied(grace):
    data = exif_rotated_jpeg(grace)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (600, 512)  # stored sideways: 600 wide, 512 high
    out = decode_image(data)
    assert out.shape == grace.shape  # (600, 512, 3): upright again
    assert _close(out, grace, 4)
