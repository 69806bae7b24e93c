"""The default, weights-free renderer: displacement-field bases + one batched ``grid_sample``.

Sessions with the same output size and format share a *group*: slot-ordered device tensors (source
image with the seam channel, bases, mouth-crop data) that grow by doubling, so joining or leaving costs
one session's copy, and a step is a handful of batched tensor ops whatever the number of sessions:

1. per session (CPU, tiny): next audio slice → features → mouth weights; idle motion → weight vector;
2. per group (device): ``grid = identity + Σ_k w_k·basis_k`` (element-wise, skipping all-zero weights),
   ``grid_sample`` of RGB (the lips are the photo's own, moved by the field), the mouth interior painted
   between them in a crop around each mouth while it is open (the seam channel sampled there only;
   gather → per-pixel shading → scatter),
   conversion to RGBA or I420 — all inside the group's window (where the bases move pixels, about half
   of a portrait's frame), pasted into each session's rest frame (rendered once when it joins).

All per-frame operations are element-wise per batch entry, so a session renders bit-identical frames
alone or in any batch.
"""
from __future__ import annotations

import threading
import uuid
import zlib
from collections.abc import Sequence
from typing import Any, cast
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.rig import FaceRig

from .audio import analyze_frame
from .bases import BasisSet, build_bases
from .colors import to_i420, to_rgba, write_i420, write_rgba
from .framing import Framing, fit_face
from .interface import (
    FrameResult,
    OutputOptions,
    Renderer,
    RenderSession,
    UtteranceEvent,
)
from .motion import IDX, Controls, IdleMotion, K, MotionOptions, MouthDriver, derive_weights
from .timeline import Timeline


class DisplacementSession(RenderSession):
    def __init__(self, session_id: str, options: OutputOptions, motion: MotionOptions, framing: Framing,
                 basis: BasisSet):
        self.id = session_id
        self.options = options
        self.motion = motion
        self.framing = framing
        self.basis = basis
        self.moving = _moving_box(basis)  # (computed here, in prepare: not under the renderer's lock)
        self.timeline = Timeline(options.sample_rate, options.fps)
        self.driver = MouthDriver(options.fps)
        seed = motion.seed if motion.seed is not None else zlib.crc32(session_id.encode())
        self.idle = IdleMotion(options.fps, motion, seed)
        self.closed = False
        self._driver_lock = threading.Lock()

    # --------------------------------------------------------------- RenderSession
    def push_audio(self, pcm, sample_rate: int, num_channels: int = 1) -> int:
        return self.timeline.push(pcm, sample_rate, num_channels)

    def end_utterance(self) -> int | None:
        return self.timeline.end()

    def clear(self) -> list[UtteranceEvent]:
        return self.timeline.clear()

    @property
    def speaking(self) -> bool:
        return self.timeline.speaking

    @property
    def buffered_seconds(self) -> float:
        return self.timeline.buffered_seconds

    @property
    def frame_index(self) -> int:
        return self.timeline.frame_index

    @property
    def rest_landmarks(self) -> np.ndarray:
        """The rig's landmarks in output pixels (the frame at rest)."""
        return self.framing.landmarks

    # --------------------------------------------------------------- per frame (render thread)
    def advance(self):
        fa = self.timeline.next_frame()
        if fa.cleared:
            self.driver.stop()
        feat = analyze_frame(fa.samples, fa.ahead, self.options.sample_rate) if fa.speaking else None
        speech = self.driver.update(feat)
        w = np.zeros(K, dtype=np.float32)
        w[IDX["jaw"]] = speech["jaw"]
        w[IDX["spread"]] = speech["spread"]
        w[IDX["round"]] = speech["round"]
        w[IDX["press"]] = speech["press"]
        w[IDX["close"]] = speech["close"]
        derive_weights(w)
        if self.motion.brows:
            w[IDX["brow"]] = speech["brow"]
        if self.motion.head_motion:
            w[IDX["pitch"]] += 0.8 * speech["nod"]
        self.idle.update(self.timeline.frame_index - 1, w)
        return Controls(w), fa


@dataclass
class _Slot:
    session: DisplacementSession
    crop: tuple[int, int]  # y0, x0 of the group-size mouth crop window, in frame pixels
    moving: tuple[int, int, int, int]  # y0, y1, x0, x1: where the session's bases move pixels (see _moving_box)


def _moving_box(basis: BasisSet) -> tuple[int, int, int, int]:
    """The bounding box (y0, y1, x0, x1) of the pixels any basis displaces: everything outside it is the
    photo at rest in every frame (background, shoulders), whatever the weights."""
    moving = np.any(basis.bases != 0, axis=(0, 3))
    rows, cols = np.flatnonzero(moving.any(axis=1)), np.flatnonzero(moving.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


class _Group:
    """Device storage for the sessions of one (height, width, format).

    A frame is rendered only inside the group's *window*: the union of its members' moving boxes and
    mouth crops, on even coordinates (whole I420 chroma blocks). Outside it every pixel is the session's
    rest frame, rendered once when it joins (``rest``: the same grid_sample at zero displacement and the
    same conversion, so a pixel has the same bytes in or out of the window, alone or in any batch).
    For a head-and-shoulders portrait the window is about half of the frame."""

    def __init__(self, height: int, width: int, fmt: str, device: torch.device):
        self.H, self.W, self.fmt, self.device = height, width, fmt, device
        self.members: list[_Slot] = []
        self.cap = 0
        # device tensors, allocated (and grown) by the first reservation
        self.src: Any = None  # (cap, 3, H, W) the framed photo, float RGB
        self.seam: Any = None  # (cap, 1, H, W) the lips' seam channel: sampled only in the mouth crops
        self.bases: Any = None
        self.rest: Any = None  # each slot's converted rest frame: (cap, H, W, 4) RGBA or (cap, N) I420
        self.crop_hw = (8, 8)
        self.crop_idx: Any = None  # mouth crop pixels, flat indices into the window
        self.jaw_px: Any = None
        self.u_norm: Any = None
        self.colors: Any = None
        self.synth: Any = None
        self.iod: Any = None
        self.window = (0, height, 0, width)  # y0, y1, x0, x1 (see the class docstring)
        ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
        xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        self.ident = torch.stack([gx, gy], dim=-1).unsqueeze(0).to(device)

    # ------------------------------------------------------------ storage
    def _alloc(self, cap: int, crop_only: bool = False) -> None:
        H, W, d = self.H, self.W, self.device
        hc, wc = self.crop_hw
        n = len(self.members)

        def grow(old, shape, dtype=torch.float32, fill=0.0):
            new = torch.full((cap, *shape), fill, dtype=dtype, device=d)
            if old is not None and n and old.shape[1:] == new.shape[1:]:
                m = min(n, old.shape[0])
                new[:m] = old[:m]
            return new

        if not crop_only:
            self.src = grow(self.src, (3, H, W))
            self.seam = grow(self.seam, (1, H, W))
            self.bases = grow(self.bases, (K, H, W, 2))
            rest_shape = (H, W, 4) if self.fmt == "rgba" else (H * W + 2 * (H // 2) * (W // 2),)
            self.rest = grow(self.rest, rest_shape, torch.uint8, 0)
        self.crop_idx = grow(self.crop_idx, (1, hc * wc), torch.int64, 0)
        self.jaw_px = grow(self.jaw_px, (3, hc * wc))
        self.u_norm = grow(self.u_norm, (1, hc * wc), fill=1.0)
        self.colors = grow(self.colors, (5, 3, 1))
        self.synth = grow(self.synth, (1, 1))
        self.iod = grow(self.iod, (1, 1), fill=1.0)
        self.cap = cap

    def _write_crop(self, i: int) -> None:
        s = self.members[i].session
        m = s.basis.mouth
        hc, wc = self.crop_hw
        y0, x0, h, w = m.crop
        cy0 = int(np.clip(y0 - (hc - h) // 2, 0, self.H - hc))
        cx0 = int(np.clip(x0 - (wc - w) // 2, 0, self.W - wc))
        self.members[i].crop = (cy0, cx0)
        jaw = np.zeros((3, hc, wc), np.float32)
        un = np.ones((hc, wc), np.float32)
        oy, ox = y0 - cy0, x0 - cx0
        jaw[:, oy : oy + h, ox : ox + w] = m.jaw_px
        un[oy : oy + h, ox : ox + w] = m.u_norm
        self.jaw_px[i] = torch.from_numpy(jaw.reshape(3, -1)).to(self.device)
        self.u_norm[i, 0] = torch.from_numpy(un.reshape(-1)).to(self.device)
        cols = np.stack([m.cavity_rgb, m.tongue_rgb, m.teeth_rgb, m.edge_up_rgb, m.edge_lo_rgb])[..., None]
        self.colors[i] = torch.from_numpy(cols.astype(np.float32)).to(self.device)
        self.synth[i] = float(m.synth_teeth)
        self.iod[i] = float(m.iod_px)

    def _place_window(self) -> None:
        """The window over the members' moving boxes and mouth crops; the crops' indices into it."""
        hc, wc = self.crop_hw
        boxes = [m.moving for m in self.members] + [(y, y + hc, x, x + wc) for y, x in (m.crop for m in self.members)]
        boxes = [b for b in boxes if b[1] > b[0] and b[3] > b[2]]
        if boxes:
            y0, x0 = min(b[0] for b in boxes) & ~1, min(b[2] for b in boxes) & ~1
            y1 = min(self.H, (max(b[1] for b in boxes) + 1) & ~1)
            x1 = min(self.W, (max(b[3] for b in boxes) + 1) & ~1)
            self.window = (y0, y1, x0, x1)
        wy0, _, wx0, wx1 = self.window
        for i, m in enumerate(self.members):
            cy0, cx0 = m.crop
            ys = np.arange(cy0, cy0 + hc) - wy0
            xs = np.arange(cx0, cx0 + wc) - wx0
            idx = (ys[:, None] * (wx1 - wx0) + xs[None, :]).reshape(1, -1)
            self.crop_idx[i] = torch.from_numpy(idx).to(self.device)

    def _write_rest(self, i: int) -> None:
        """Slot ``i``'s rest frame: its photo through grid_sample at zero displacement, converted."""
        out = F.grid_sample(self.src[i : i + 1], self.ident, mode="bilinear", padding_mode="border", align_corners=False)
        self.rest[i] = (to_rgba(out) if self.fmt == "rgba" else to_i420(out))[0]

    def add(self, s: DisplacementSession) -> None:
        h, w = s.basis.mouth.crop[2:]
        hc = min(self.H, max(self.crop_hw[0], (h + 7) // 8 * 8))
        wc = min(self.W, max(self.crop_hw[1], (w + 7) // 8 * 8))
        regrow = (hc, wc) != self.crop_hw
        self.members.append(_Slot(s, (0, 0), s.moving))
        n = len(self.members)
        if regrow:
            self.crop_hw = (hc, wc)
            if n > self.cap:
                self._alloc(max(2 * self.cap, 1))
            self._alloc(self.cap, crop_only=True)
            for i in range(n - 1):
                self._write_crop(i)
        elif n > self.cap:
            self._alloc(max(2 * self.cap, 1))
        i = n - 1
        img = torch.from_numpy(s.framing.image).to(self.device).permute(2, 0, 1).float()
        self.src[i] = img
        self.seam[i, 0] = torch.from_numpy(s.basis.seam).to(self.device)
        self.bases[i] = torch.from_numpy(s.basis.bases).to(self.device)
        self._write_crop(i)
        self._write_rest(i)
        self._place_window()

    def remove(self, s: DisplacementSession) -> None:
        i = next(j for j, m in enumerate(self.members) if m.session is s)
        last = len(self.members) - 1
        if i != last:  # move the last slot into the hole
            for t in (self.src, self.seam, self.bases, self.rest, self.jaw_px, self.u_norm, self.colors, self.synth, self.iod):
                t[i] = t[last]
            self.members[i] = self.members[last]
        self.members.pop()
        self._place_window()  # (it may shrink)

    # ------------------------------------------------------------ render
    def render(self, weights: np.ndarray, slots: slice | None = None) -> torch.Tensor:
        """weights (B, K) for the slots ``slots`` (default all) → (B, H, W, 4) RGBA or (B, N) I420."""
        sl = slots if slots is not None else slice(0, len(self.members))
        B = weights.shape[0]
        y0, y1, x0, x1 = self.window
        w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)).to(self.device)
        grid = self.ident[:, y0:y1, x0:x1].expand(B, -1, -1, -1).clone()
        bases = self.bases[sl]
        for k in np.flatnonzero(np.any(weights != 0, axis=0)):
            grid.addcmul_(bases[:, k, y0:y1, x0:x1], w[:, k].view(B, 1, 1, 1))
        out = F.grid_sample(self.src[sl], grid, mode="bilinear", padding_mode="border", align_corners=False)
        self._mouth(out, grid, w[:, [IDX["jaw"], IDX["jaw_spread"], IDX["jaw_round"]]].view(B, 3, 1), sl)
        frames = self.rest[sl].clone()
        if self.fmt == "rgba":
            write_rgba(frames, out, y0, x0)
        else:
            write_i420(frames, out, self.H, self.W, y0, x0)
        return frames

    def _mouth(self, out: torch.Tensor, grid: torch.Tensor, jaw: torch.Tensor, sl: slice) -> None:
        """Paint the opened gap in each session's mouth crop: a cavity lit near the lips and dark at the
        back, the tongue and the lower teeth at wide openings, the upper teeth under the upper lip.

        The lips themselves are the photo's, moved by the jaw field; only pixels sampled from between
        the lips (the seam channel says how far) are painted, with soft edges and no outline."""
        B = out.shape[0]
        G = (jaw * self.jaw_px[sl]).sum(1, keepdim=True)  # local gap height (px) at this pixel
        if not bool((G > 0.5).any()):  # (alpha below is 0 everywhere: the mouth is closed)
            return
        idx = self.crop_idx[sl]
        flat = out.view(B, 3, -1)
        rgb = torch.gather(flat, 2, idx.expand(B, 3, -1))
        # the seam where the field samples these pixels from (the same grid_sample, on the crop only)
        at = torch.gather(grid.view(B, -1, 2), 1, idx.view(B, -1, 1).expand(B, -1, 2)).view(B, 1, -1, 2)
        S = F.grid_sample(self.seam[sl], at, mode="bilinear", padding_mode="border", align_corners=False).view(B, 1, -1)
        t = S + G  # depth below the upper edge of the gap
        b = -S  # height above its lower edge
        # soft 2 px edges; nothing at all while the gap is under a pixel (rest frame = the photo)
        alpha = _smooth(-0.75, 1.5, b) * _smooth(-0.75, 1.5, t) * (G - 0.5).clamp(0, 1)
        if not bool((alpha > 0).any()):
            return
        un = self.u_norm[sl]
        iod = self.iod[sl]
        cols = self.colors[sl]
        cavity, tongue, teeth, edge_up, edge_lo = cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4]
        side = 1.0 - 0.3 * (un * un).clamp(0, 1)  # darker towards the corners (the cheeks' shadow)
        # lit near the lips: the photo's own colour along each inner edge (lip or teeth) in their shade,
        # so the boundary has no outline; dark towards the back of the mouth
        edge = torch.minimum(t, b).clamp(min=0)
        # a narrow gap is shallow shade, only a wide one shows the dark back of the mouth
        depth = _smooth(0.0, 0.4 * G + 3.0, edge) * (0.35 + 0.65 * _smooth(0.0, 0.15 * iod, G))
        near = edge_up + (edge_lo - edge_up) * _smooth(-2.0, 2.0, t - b)
        col = (near + (cavity - near) * depth) * side
        wide = _smooth(0.13 * iod, 0.22 * iod, G)  # 0 for speech-size openings, 1 near the widest
        # tongue: low in the mouth, only when it is wide open
        wt = wide * (1.0 - _smooth(0.0, 0.5 * G + 1.0, b)) * 0.6 * (1.0 - un * un).clamp(0, 1)
        col = col + (tongue * (0.6 + 0.4 * _smooth(0.0, 0.25 * G + 1.0, b)) * side - col) * wt
        synth = self.synth[sl].view(B, 1, 1)
        # upper teeth: a band under the upper lip, following its curve (t is measured from the lip),
        # the top in the lip's shadow, a soft lower edge, narrower than the mouth
        t_up = torch.minimum(0.34 * G, 0.065 * iod)
        show = _smooth(0.02 * iod, 0.06 * iod, G)
        a_up = _smooth(t_up + 0.8, t_up - 0.8, t) * (1.0 - _smooth(0.5, 0.85, un)) * show * synth
        tshade = (0.55 + 0.45 * _smooth(0.0, 0.5 * t_up + 1.0, t)) * (1.0 - 0.45 * un * un)
        # thin gaps between the teeth (central incisors, laterals, canines, premolars)
        seps = cast(torch.Tensor, sum(torch.exp(-(((un - c) / 0.02) ** 2)) for c in (0.0, 0.2, 0.37, 0.51, 0.63)))
        tshade = tshade * (1.0 - 0.18 * seps.clamp(0, 1))
        col = col + (teeth * tshade - col) * a_up
        # lower teeth: only at wide openings, just above the lower lip
        t_lo = torch.minimum(0.12 * G, 0.03 * iod)
        a_lo = _smooth(t_lo + 0.8, t_lo - 0.8, b) * (1.0 - _smooth(0.3, 0.6, un)) * wide * synth * 0.35
        col = col + (teeth * 0.6 * (1.0 - 0.4 * un * un) - col) * a_lo  # mostly behind the lower lip
        new = rgb + (col - rgb) * alpha
        flat[:, :3].scatter_(2, idx.expand(B, 3, -1), new)


def _smooth(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3.0 - 2.0 * t)


class DisplacementRenderer(Renderer):
    """Weights-free talking head (see the module docstring). ``device``: "cpu", "cuda", "cuda:1", ..."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._lock = threading.RLock()
        self._sessions: list[DisplacementSession] = []
        self._groups: dict[tuple[int, int, str], _Group] = {}

    @property
    def sessions(self) -> Sequence[DisplacementSession]:
        with self._lock:
            return tuple(self._sessions)

    def prepare(self, image: np.ndarray, rig: FaceRig, options: OutputOptions | None = None, *,
                motion: MotionOptions | None = None, session_id: str | None = None) -> DisplacementSession:
        """Build a session (framing + bases: the slow part, ~0.1–0.5 s on a CPU) without adding it."""
        options = options or OutputOptions()
        motion = motion or MotionOptions()
        framing = fit_face(image, rig, options.width, options.height)
        basis = build_bases(framing.image, framing.landmarks, jaw_max_iod=motion.jaw_max_iod)
        return DisplacementSession(session_id or uuid.uuid4().hex, options, motion, framing, basis)

    def add(self, session: DisplacementSession) -> DisplacementSession:
        o = session.options
        with self._lock:
            key = (o.height, o.width, o.format)
            g = self._groups.get(key)
            if g is None:
                g = self._groups[key] = _Group(o.height, o.width, o.format, self.device)
            g.add(session)
            self._sessions.append(session)
        return session

    def open_session(self, image, rig, options=None, *, motion=None, session_id=None) -> DisplacementSession:
        return self.add(self.prepare(image, rig, options, motion=motion, session_id=session_id))

    def close_session(self, session) -> None:
        with self._lock:
            s = next((x for x in self._sessions if x is session or x.id == session), None)
            if s is None:
                return
            o = s.options
            self._groups[(o.height, o.width, o.format)].remove(s)
            self._sessions.remove(s)
            s.closed = True

    @torch.inference_mode()
    def step(self) -> list[FrameResult]:
        with self._lock:
            results: dict[str, FrameResult] = {}
            for g in self._groups.values():
                if not g.members:
                    continue
                controls, audio = [], []
                for m in g.members:
                    c, fa = m.session.advance()
                    controls.append(c)
                    audio.append(fa)
                W = np.stack([c.weights for c in controls])
                frames = g.render(W)
                for i, m in enumerate(g.members):
                    s, fa, c = m.session, audio[i], controls[i]
                    k = s.timeline.frame_index - 1
                    results[s.id] = FrameResult(
                        session_id=s.id, frame_index=k, pts=k / s.options.fps, frame=frames[i],
                        audio=fa.samples, sample_rate=s.options.sample_rate, speaking=fa.speaking,
                        mouth_open=c.mouth_open, utterance_id=fa.utterance_id,
                        utterance_position=fa.position, events=fa.events, width=s.options.width,
                        height=s.options.height, format=s.options.format, weights=c.weights,
                    )
            return [results[s.id] for s in self._sessions]

    @torch.inference_mode()
    def render_weights(self, session: DisplacementSession, weights: np.ndarray | dict) -> torch.Tensor:
        """One frame of ``session`` with explicit basis weights (stills, contact sheets, tests); the
        session's timeline does not move."""
        if isinstance(weights, dict):
            w = np.zeros(K, np.float32)
            for name, v in weights.items():
                w[IDX[name]] = v
            derive_weights(w)
        else:
            w = np.asarray(weights, np.float32).reshape(K)
        o = session.options
        with self._lock:
            g = self._groups[(o.height, o.width, o.format)]
            i = next(j for j, m in enumerate(g.members) if m.session is session)
            return g.render(w[None], slice(i, i + 1))[0]
