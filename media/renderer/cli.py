"""Look at the renderer's output.

    # an image file (or the bundled samples grace_hopper / astronaut) speaking a WAV → MP4 (+ audio)
    python -m media.renderer.cli render --image portrait.jpg --wav speech.wav --out talk.mp4
    python -m media.renderer.cli render --image grace_hopper --wav synth --out talk.mp4 --sheet talk.png

    # contact sheet: closed → open frames (full frame and mouth close-up) for several avatars
    python -m media.renderer.cli sheet --image grace_hopper --image astronaut --out sheet.png
    # the mouth shapes instead: rest / spread / round / open / closed
    python -m media.renderer.cli sheet --poses shapes --image grace_hopper --image astronaut --out shapes.png

``--wav synth`` generates speech-like audio (voiced syllables with formants, pauses). The face models
must be set up first (``python -m pipelines.faces.models``). MP4s are written with PyAV (H.264 +
AAC); no ffmpeg binary is needed.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, cast

import cv2
import numpy as np
import torch

from .interface import OutputOptions
from .motion import MotionOptions

SAMPLES = ("grace_hopper", "astronaut")


def load_image(spec: str) -> np.ndarray:
    """An RGB uint8 image from a file path or a bundled sample name."""
    if spec == "grace_hopper":
        from matplotlib import cbook
        from PIL import Image

        with cast(IO[bytes], cbook.get_sample_data("grace_hopper.jpg")) as fh:  # (a file object by default)
            return np.array(Image.open(fh).convert("RGB"))
    if spec == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    data = Path(spec).read_bytes()
    from pipelines.faces.decode import decode_image

    return decode_image(data)


def load_avatar(spec: str):
    """(aligned image, FaceRig): a stored avatar by id (``avat_...``, from the configured database and
    storage), or an image file / sample name through the face pipeline."""
    if spec.startswith("avat_"):
        from media.assets import load_avatar as load_stored
        from core.db.engine import Database
        from core.db.store import Store
        from core.settings import get_settings

        settings = get_settings()
        row = Store(Database(settings.database_url)).avatars.get_avatar(spec)
        if row is None or not row.image_path:
            raise SystemExit(f"avatar {spec} not found in {settings.database_url}")
        if not row.rig_path:
            raise SystemExit(f"avatar {spec} has no rig")
        assets = load_stored(settings, row.image_path, row.rig_path)
        return assets.image, assets.rig
    from pipelines.faces.pipeline import process_face_array

    pf = process_face_array(np.ascontiguousarray(load_image(spec)))
    return pf.aligned, pf.rig


def on_background(avatar, background: str):
    """(image, rig) on a session ``background`` (the person mask computed here, as at upload)."""
    if background == "original":
        return avatar
    from pipelines.faces.segment import person_mask

    from .background import apply_background

    image, rig = avatar
    return apply_background(image, person_mask(image), background), rig


def read_wav(path: str) -> tuple[np.ndarray, int]:
    if path == "synth":
        from .speech import synth_speech

        sp = synth_speech(8.0, 24000, seed=7)
        return sp.audio, sp.sample_rate
    from scipy.io import wavfile

    from .audio import pcm16_to_array

    rate, data = wavfile.read(path)
    if data.dtype == np.uint8:
        data = (data.astype(np.int16) - 128) * 256
    elif data.dtype == np.int32:
        data = (data >> 16).astype(np.int16)
    return pcm16_to_array(data), int(rate)


def write_mp4(path: str, frames: list[np.ndarray], audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """RGB frames + mono int16 audio → H.264/AAC MP4 (PyAV)."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(path, "w") as container:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        aus = container.add_stream("aac", rate=sample_rate)
        aus.layout = "mono"
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., :3]), format="rgb24")):
                container.mux(pkt)
        for pkt in vs.encode():
            container.mux(pkt)
        step = 1024
        for i in range(0, audio.size, step):
            chunk = np.ascontiguousarray(audio[i : i + step].reshape(1, -1))
            af = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            af.sample_rate = sample_rate
            af.pts = i
            for pkt in aus.encode(af):
                container.mux(pkt)
        for pkt in aus.encode():
            container.mux(pkt)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(img.copy())
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def mouth_zoom(frame: np.ndarray, session, size: tuple[int, int]) -> np.ndarray:
    """A close-up of the mouth region (chin included) of a rendered frame."""
    L = session.rest_landmarks
    iod = session.basis.iod_px
    cx, cy = L[[61, 291]].mean(axis=0)
    cy += 0.15 * iod
    half_w = 0.75 * iod
    half_h = half_w * size[1] / size[0]
    x0, x1 = int(max(0, cx - half_w)), int(min(frame.shape[1], cx + half_w))
    y0, y1 = int(max(0, cy - half_h)), int(min(frame.shape[0], cy + half_h))
    return cv2.resize(frame[y0:y1, x0:x1, :3], size, interpolation=cv2.INTER_CUBIC)


def contact_sheet(rows: Sequence[tuple[str, list[tuple[str, np.ndarray]], object]], thumb: int = 256) -> np.ndarray:
    """rows: (name, [(label, RGB frame)], session) → one image: per avatar a row of frames and a row of
    mouth close-ups."""
    out_rows = []
    for name, frames, session in rows:
        full, zoom = [], []
        for label, f in frames:
            h, w = f.shape[:2]
            t = cv2.resize(f[..., :3], (thumb * w // max(h, w) // 2 * 2, thumb * h // max(h, w) // 2 * 2),
                           interpolation=cv2.INTER_AREA)
            pad = np.full((thumb, thumb, 3), 24, np.uint8)
            pad[(thumb - t.shape[0]) // 2 : (thumb - t.shape[0]) // 2 + t.shape[0],
                (thumb - t.shape[1]) // 2 : (thumb - t.shape[1]) // 2 + t.shape[1]] = t
            full.append(_label(pad, f"{name} {label}"))
            zoom.append(mouth_zoom(f, session, (thumb, thumb * 3 // 4)))
        out_rows.append(np.concatenate(full, axis=1))
        out_rows.append(np.concatenate(zoom, axis=1))
    width = max(r.shape[1] for r in out_rows)
    out_rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in out_rows]
    return np.concatenate(out_rows, axis=0)


# The mouth shapes a person judges the look by (basis weights; see :mod:`media.renderer.motion`).
SHAPE_POSES: dict[str, dict[str, float]] = {
    "rest": {},
    "spread": {"jaw": 0.35, "spread": 1.0},
    "round": {"jaw": 0.35, "round": 1.0},
    "half": {"jaw": 0.5},
    "open": {"jaw": 1.0},
    "closed": {"close": 1.0, "press": 0.6},
}
OPENING_POSES: dict[str, dict[str, float]] = {
    **{f"jaw {j:.1f}": {"jaw": j} for j in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)},
    "jaw .7 round": {"jaw": 0.7, "round": 1.0},
    "jaw .5 spread": {"jaw": 0.5, "spread": 1.0},
}


def pose_sheet(avatars: list[tuple[str, tuple]], poses: dict[str, dict[str, float]], options: OutputOptions,
               device: str = "cpu") -> np.ndarray:
    """avatars: (name, (aligned image, rig)) → a contact sheet of ``poses`` (full frames + mouth close-ups)."""
    from .default import DisplacementRenderer

    r = DisplacementRenderer(device)
    rows = []
    for name, (image, rig) in avatars:
        s = r.open_session(image, rig, options, motion=MotionOptions(seed=0))
        rows.append((name, [(label, r.render_weights(s, w).cpu().numpy()) for label, w in poses.items()], s))
    return contact_sheet(rows)


def save_png(path: str, rgb: np.ndarray) -> None:
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _options(a) -> OutputOptions:
    if a.width and a.height:
        return OutputOptions(width=a.width, height=a.height, fps=a.fps, sample_rate=a.sample_rate)
    return OutputOptions.for_aspect(a.aspect, fps=a.fps, sample_rate=a.sample_rate)


def cmd_render(a) -> int:
    from .default import DisplacementRenderer

    image, rig = on_background(load_avatar(a.image), a.background)
    audio, rate = read_wav(a.wav)
    r = DisplacementRenderer(a.device)
    motion = MotionOptions(head_motion=not a.no_head_motion, seed=0)
    s = r.open_session(image, rig, _options(a), motion=motion, session_id="cli")
    t0 = time.perf_counter()
    uid = s.push_audio(audio, rate)
    s.end_utterance()
    frames, out_audio, opens = [], [], []
    finished_at = None
    while finished_at is None or len(frames) < finished_at + int(a.tail * a.fps):
        res = r.step()[0]
        frames.append(res.frame_numpy())
        out_audio.append(res.audio)
        opens.append(res.mouth_open)
        if any(e.kind == "finished" and e.utterance_id == uid for e in res.events):
            finished_at = len(frames)
    dt = time.perf_counter() - t0
    write_mp4(a.out, frames, np.concatenate(out_audio), a.fps, a.sample_rate)
    print(f"{a.out}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]} @ {a.fps} fps, "
          f"rendered in {dt:.1f} s ({len(frames) / dt:.0f} fps)")
    if a.sheet:
        opens_arr = np.array(opens)
        picks = [int(np.argmin(np.abs(opens_arr - q * opens_arr.max()))) for q in (0, 0.2, 0.4, 0.6, 0.8, 1.0)]
        sheet = contact_sheet([(Path(a.image).stem, [(f"open {opens_arr[i]:.2f}", frames[i]) for i in picks], s)])
        save_png(a.sheet, sheet)
        print(f"{a.sheet}: contact sheet")
    return 0


def cmd_sheet(a) -> int:
    poses = SHAPE_POSES if a.poses == "shapes" else OPENING_POSES
    avatars = [(Path(spec).stem, on_background(load_avatar(spec), a.background)) for spec in a.image]
    save_png(a.out, pose_sheet(avatars, poses, _options(a), a.device))
    print(f"{a.out}: contact sheet of {len(avatars)} avatar(s)")
    return 0


def _background(value: str) -> str:
    from core.look import validate_background

    try:
        return validate_background(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m media.renderer.cli", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--aspect", default="1:1", choices=["4:3", "3:4", "1:1"])
        sp.add_argument("--width", type=int, default=0)
        sp.add_argument("--height", type=int, default=0)
        sp.add_argument("--fps", type=int, default=25)
        sp.add_argument("--sample-rate", type=int, default=48000)
        sp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        sp.add_argument("--background", default="original", type=_background,
                        help='"original", "blur" or "#RRGGBB" (e.g. "#00FF00")')

    pr = sub.add_parser("render", help="image + WAV → MP4 with the audio muxed in")
    pr.add_argument("--image", required=True, help=f"avatar id, image file or one of {SAMPLES}")
    pr.add_argument("--wav", required=True, help="WAV file (PCM) or 'synth'")
    pr.add_argument("--out", required=True)
    pr.add_argument("--sheet", default=None, help="also write a contact sheet PNG")
    pr.add_argument("--tail", type=float, default=0.5, help="seconds of idle after the speech")
    pr.add_argument("--no-head-motion", action="store_true")
    common(pr)
    ps = sub.add_parser("sheet", help="contact sheet PNG of closed → open frames")
    ps.add_argument("--image", action="append", required=True, help=f"image file or one of {SAMPLES} (repeatable)")
    ps.add_argument("--out", required=True)
    ps.add_argument("--poses", default="opening", choices=["opening", "shapes"],
                    help="opening: closed → open (+ round, spread); shapes: rest/spread/round/half/open/closed")
    common(ps)
    a = p.parse_args(argv)
    try:
        return cmd_render(a) if a.cmd == "render" else cmd_sheet(a)
    except Exception as exc:  # a readable message for the person at the terminal
        from core.errors import ApiError, ModelFilesMissing

        if isinstance(exc, (ApiError, ModelFilesMissing, FileNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
