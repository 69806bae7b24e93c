"""Displacement-field bases built once per avatar (per output size) from its face rig.

Every basis is a *backward* field: for each output pixel, where to sample the source image, as an
offset per unit weight. A frame's sampling grid is ``identity + Σ_k w_k · basis_k``, one ``grid_sample``.
Offsets are stored in ``grid_sample``'s normalised coordinates (``align_corners=False``), shape
``(K, H, W, 2)``, so blending needs no layout change.

Geometry (all from the 468-point mesh, see :mod:`core.rig`):

- a mouth frame: ``u`` along the outer mouth corners, ``v`` perpendicular, downwards. The *seam* is the
  midline between the upper and lower inner lip contours (the lip line for a closed mouth, the middle
  of the teeth for a mouth open at rest). Everything below the seam moves with the jaw; what is above
  stays with the upper lip, so upper teeth visible at rest stay attached to the upper lip.
- ``jaw``: below the seam the content is pulled down by ``jaw_max_iod`` IODs at the lip centre, lens
  shaped towards the corners, the chin moving 0.75 as far, fading into the neck below the face oval and
  towards the jaw line; the gap that opens samples from above the seam, and the renderer paints it as
  the mouth interior using an extra image channel (signed distance to the seam, in pixels) carried
  through the same ``grid_sample``.
- ``spread``/``round``: corners outward/inward (round also pushes the lips out), zero at the seam.
- ``press``: lips thinned towards the seam (rolled in), zero at the seam: the inner lip line holds.
- ``close``: the inner lips meet at the seam (each moves half the local rest gap, fading out above the
  upper and below the lower lip): a photo that shows its teeth at rest can still say /m/, /b/, /p/.
- ``blink_r``/``blink_l``: the upper lid comes down to the lower lid; the lid skin above stretches.
- ``brow``: brows and forehead up, the upper lids stay.
- ``yaw``/``pitch``/``roll``/``lift``: small rigid-ish head motions inside a soft head mask (face oval
  widened for hair), with more parallax at the nose; outside the mask every field is exactly zero, so
  background and shoulders are sampled at their own pixel centres (unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.rig import (
    CHIN,
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE_LIDS,
    LIPS_INNER,
    LIPS_OUTER,
    LOWER_INNER_LIP_CENTER,
    MOUTH_CORNERS,
    NOSE_TIP,
    RIGHT_BROW,
    RIGHT_EYE_LIDS,
    UPPER_INNER_LIP_CENTER,
    eye_centers,
    inter_ocular_distance,
)

from .motion import BASIS_NAMES, IDX, K

# Inner lip contour halves, ordered from the subject's right inner corner (78) to the left one (308).
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER_CENTER = 0
LOWER_OUTER_CENTER = 17
# Eye lid contours from corner to corner (subject's right eye: 33 → 133; left eye: 263 → 362).
RIGHT_UPPER_LID = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_LOWER_LID = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_UPPER_LID = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_LOWER_LID = (263, 249, 390, 373, 374, 380, 381, 382, 362)


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class MouthInfo:
    """Static data the mouth-interior pass needs (crop of the output frame around the mouth)."""

    crop: tuple[int, int, int, int]  # y0, x0, h, w in output pixels
    jaw_px: np.ndarray  # (3, h, w) float32: displacement (px) per unit jaw, jaw_spread, jaw_round weight
    u_norm: np.ndarray  # (h, w) float32: |u| / half mouth width
    cavity_rgb: np.ndarray  # (3,) float32 0..255
    tongue_rgb: np.ndarray
    teeth_rgb: np.ndarray
    edge_up_rgb: np.ndarray  # the cavity next to its upper / lower edge: the photo's inner lip (or teeth)
    edge_lo_rgb: np.ndarray  # colour there, in shadow
    synth_teeth: float  # 1.0 when the photo shows no teeth at rest (draw a band), else 0.0
    iod_px: float
    rest_gap_iod: float


@dataclass
class BasisSet:
    bases: np.ndarray  # (K, H, W, 2) float32, normalised grid offsets per unit weight
    seam: np.ndarray  # (H, W) float32 signed distance below the seam (px, clipped), the 4th channel
    mouth: MouthInfo
    iod_px: float
    names: tuple[str, ...] = BASIS_NAMES


def _frame(origin: np.ndarray, e_u: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    e_v = np.array([-e_u[1], e_u[0]])
    dx, dy = xs - origin[0], ys - origin[1]
    return dx * e_u[0] + dy * e_u[1], dx * e_v[0] + dy * e_v[1], e_v


def _uv(points: np.ndarray, origin, e_u):
    e_v = np.array([-e_u[1], e_u[0]])
    d = points - origin
    return d @ e_u, d @ e_v


def _curve(u_pts: np.ndarray, v_pts: np.ndarray, u: np.ndarray, **kw) -> np.ndarray:
    order = np.argsort(u_pts)
    return np.interp(u, u_pts[order], v_pts[order], **kw)


def _median_color(img: np.ndarray, mask: np.ndarray, fallback) -> np.ndarray:
    sel = img[mask > 0]
    if sel.shape[0] < 10:
        return np.asarray(fallback, dtype=np.float32)
    return np.median(sel.reshape(-1, 3), axis=0).astype(np.float32)


def build_bases(image: np.ndarray, landmarks: np.ndarray, *, jaw_max_iod: float = 0.30) -> BasisSet:
    """All bases for an image (H, W, 3) uint8 and its landmarks (468, 2) in that image's pixels."""
    H, W = image.shape[:2]
    L = np.asarray(landmarks, dtype=np.float32)  # float32 throughout: half the memory traffic
    iod = inter_ocular_distance(L)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    fwd = np.zeros((K, H, W, 2), dtype=np.float32)  # forward displacement (px) per unit weight

    # ---------------------------------------------------------------- face frame and head mask
    eye_r, eye_l = eye_centers(L)
    e_uf = (eye_l - eye_r) / np.linalg.norm(eye_l - eye_r)
    e_vf = np.array([-e_uf[1], e_uf[0]])
    oval = L[list(FACE_OVAL)]
    ou, ov = _uv(oval, (eye_r + eye_l) / 2, e_uf)
    eye_mid = (eye_r + eye_l) / 2
    oc_u, oc_v = (ou.min() + ou.max()) / 2, (ov.min() + ov.max()) / 2
    ow, oh = ou.max() - ou.min(), ov.max() - ov.min()
    center = eye_mid + e_uf * oc_u + e_vf * (oc_v - 0.12 * oh)
    hu, hv, _ = _frame(center, e_uf, xs, ys)
    chin_v = float(_uv(L[CHIN][None], center, e_uf)[1][0])
    ax = 0.5 * ow * 1.22
    ay = np.where(hv < 0, 0.5 * oh * 1.45, chin_v * 1.12)
    r = np.sqrt((hu / ax) ** 2 + (hv / ay) ** 2)
    head = 1.0 - smoothstep(0.82, 1.12, r)  # exactly 0 outside r = 1.12
    nose = L[NOSE_TIP]
    depth = np.exp(-((xs - nose[0]) ** 2 + (ys - nose[1]) ** 2) / (2 * (0.45 * iod) ** 2))
    pivot = L[CHIN] + 0.35 * (L[CHIN] - eye_mid)
    px, py = xs - pivot[0], ys - pivot[1]
    theta = np.pi / 180.0
    fwd[IDX["roll"], ..., 0] = head * theta * (-py)
    fwd[IDX["roll"], ..., 1] = head * theta * px
    yaw = head * iod * 0.018 * (0.55 + 0.9 * depth)
    fwd[IDX["yaw"]] = yaw[..., None] * e_uf
    pitch = head * iod * 0.014 * (0.5 + 0.9 * depth)
    fwd[IDX["pitch"]] = pitch[..., None] * e_vf
    fwd[IDX["lift"]] = (-head * 0.01 * iod)[..., None] * e_vf

    # ---------------------------------------------------------------- mouth frame
    c_r, c_l = L[MOUTH_CORNERS[0]], L[MOUTH_CORNERS[1]]
    e_um = (c_l - c_r) / np.linalg.norm(c_l - c_r)
    origin = (c_r + c_l) / 2
    w_out = float(np.linalg.norm(c_l - c_r) / 2)
    mu, mv, e_vm = _frame(origin, e_um, xs, ys)
    ends = np.array([MOUTH_CORNERS[0], MOUTH_CORNERS[1]])
    up_u, up_v = _uv(L[list(UPPER_INNER) + list(ends)], origin, e_um)
    lo_u, lo_v = _uv(L[list(LOWER_INNER) + list(ends)], origin, e_um)
    upper = _curve(up_u, up_v, mu)
    lower = _curve(lo_u, lo_v, mu)
    seam_v = 0.5 * (upper + lower)
    d = mv - seam_v  # signed distance below the seam, px (along v)
    _, c_up = _uv(L[[UPPER_INNER_LIP_CENTER]], origin, e_um)
    _, c_lo = _uv(L[[LOWER_INNER_LIP_CENTER]], origin, e_um)
    rest_gap = float(max(c_lo[0] - c_up[0], 0.0))
    seam0 = float((c_lo[0] + c_up[0]) / 2)
    _, uo = _uv(L[[UPPER_OUTER_CENTER]], origin, e_um)
    _, lo = _uv(L[[LOWER_OUTER_CENTER]], origin, e_um)
    lip_up = max(seam0 - float(uo[0]), 0.04 * iod)
    lip_lo = max(float(lo[0]) - seam0, 0.05 * iod)

    # jaw: lens-shaped at the lips, chin block below, fading into the neck and to the jaw line
    face_mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(face_mask, [np.round(oval).astype(np.int32)], 255)
    dist_out = cv2.distanceTransform(255 - face_mask, cv2.DIST_L2, 5)
    jaw_half = max(float(np.abs(_uv(oval, origin, e_um)[0]).max()), 1.2 * w_out)
    r0 = max(1.5, 0.02 * iod)
    ramp = smoothstep(0.0, r0, d)
    w_in = max(float(np.abs(up_u[:len(UPPER_INNER)][[0, -1]]).mean()), 0.5 * w_out)
    chin_lat = 0.75 * (1.0 - smoothstep(0.35 * jaw_half, 0.95 * jaw_half, np.abs(mu)))
    jaw_px_max = jaw_max_iod * iod
    # the lens → chin transition must be long enough that the map never folds (d/dd of J·jaw < 1)
    beta = smoothstep(0.0, max(lip_lo + 0.08 * iod, 1.4 * 0.75 * 1.5 * jaw_px_max), d)
    fade = 1.0 - smoothstep(0.0, 0.45 * iod, dist_out)

    def jaw_field(half_width: float, gain: float, power: float) -> np.ndarray:
        lens = np.clip(1.0 - (mu / half_width) ** 2, 0.0, 1.0) ** power
        return ramp * ((1.0 - beta) * gain * lens + beta * chin_lat) * fade * head

    J = jaw_field(w_in, 1.0, 1.0)
    # the opening takes the lips' shape: wider and flatter when spread (the corners move out with the
    # spread basis), narrower, taller and rounder when rounded; as differences, weighted jaw·spread
    # and jaw·round, so the plain jaw is unchanged
    J_spread = jaw_field(w_in + 0.05 * iod, 0.85, 1.0) - J
    J_round = jaw_field(max(w_in - 0.06 * iod, 0.5 * w_in), 1.15, 0.6) - J
    fwd[IDX["jaw"]] = (J * jaw_px_max)[..., None] * e_vm
    fwd[IDX["jaw_spread"]] = (J_spread * jaw_px_max)[..., None] * e_vm
    fwd[IDX["jaw_round"]] = (J_round * jaw_px_max)[..., None] * e_vm

    # spread / round / press
    au = np.abs(mu)
    lat = np.where(au <= w_out, mu / w_out, np.sign(mu) * np.exp(-(((au - w_out) / (0.6 * w_out)) ** 2)))
    # nothing above the mouth may move with it: fade out before the base of the nose (subnasale, 2)
    _, sn = _uv(L[[2]], origin, e_um)
    nose_gap = max(seam0 - float(sn[0]), 0.08 * iod)
    guard = 1.0 - smoothstep(0.45 * nose_gap, 0.95 * nose_gap, -d)
    vert = np.exp(-((d / (0.35 * iod)) ** 2)) * guard
    lens_w = np.clip(1.0 - (mu / (1.1 * w_out)) ** 2, 0.0, 1.0) ** 0.5
    lt = np.where(d < 0, lip_up, lip_lo)
    prof = (d / lt) * np.exp(0.5 * (1.0 - (d / lt) ** 2))  # signed, ±1 at the outer lip lines, 0 at the seam
    fwd[IDX["spread"]] = (0.06 * iod * lat * vert * head)[..., None] * e_um
    fwd[IDX["round"]] = (-0.07 * iod * lat * vert * head)[..., None] * e_um + (
        0.02 * iod * prof * lens_w * guard * head
    )[..., None] * e_vm
    fwd[IDX["press"]] = (-0.35 * lt * prof * lens_w * guard * head)[..., None] * e_vm
    # close: half the local gap from each side; the output pixel just above the seam samples the upper
    # inner lip edge, the one just below the lower edge (the teeth between them are not shown). The
    # fade is long enough (slope < 1) that the lips stretch without folding.
    half_gap = 0.6 * np.clip(lower - upper, 0.0, None)  # a little more than half: the lips press
    reach = 2.5 * half_gap + 0.5 * lt
    fwd[IDX["close"]] = (np.sign(-d) * half_gap * (1.0 - smoothstep(0.0, reach, np.abs(d))) * guard * head)[..., None] * e_vm

    # ---------------------------------------------------------------- blinks
    for name, upper_ids, lower_ids in (
        ("blink_r", RIGHT_UPPER_LID, RIGHT_LOWER_LID),
        ("blink_l", LEFT_UPPER_LID, LEFT_LOWER_LID),
    ):
        a, b = L[upper_ids[0]], L[upper_ids[-1]]
        e_ue = (b - a) / np.linalg.norm(b - a)
        if e_ue[0] < 0:
            e_ue = -e_ue
        eo = (a + b) / 2
        eu, ev, e_ve = _frame(eo, e_ue, xs, ys)
        uu, uv_ = _uv(L[list(upper_ids)], eo, e_ue)
        lu, lv = _uv(L[list(lower_ids)], eo, e_ue)
        up_c = _curve(uu, uv_, eu)
        lo_c = _curve(lu, lv, eu)
        gap = np.clip(lo_c - up_c, 0.0, None)
        half = np.abs(uu).max()
        gap = np.where(np.abs(eu) <= half, gap, 0.0)
        gmax = float(gap.max()) if gap.size else 0.0
        t_above = max(1.2 * gmax, 0.03 * iod)  # linear ramp, slope < 1: the lid skin stretches, no fold
        delta = max(1.5, 0.025 * iod)
        d_up, d_lo = ev - up_c, ev - lo_c
        E = np.where(d_up < 0, np.clip(1.0 + d_up / t_above, 0.0, 1.0), np.where(d_lo <= 0, 1.0, 1.0 - smoothstep(0.0, delta, d_lo)))
        fwd[IDX[name]] = (E * gap * head)[..., None] * e_ve

    # ---------------------------------------------------------------- brows
    brow_prof = np.zeros((H, W), np.float32)
    for brow_ids, lid in ((RIGHT_BROW, RIGHT_EYE_LIDS[0]), (LEFT_BROW, LEFT_EYE_LIDS[0])):
        bp = L[list(brow_ids)]
        bc = bp.mean(axis=0)
        bu, _ = _uv(bp, bc, e_uf)
        hl = max(float(np.abs(bu).max()), 0.2 * iod)
        db = max(float((L[lid] - bc) @ e_vf), 0.05 * iod)
        ru, rv, _ = _frame(bc, e_uf, xs, ys)
        vprof = np.where(rv >= 0, 1.0 - smoothstep(0.0, 0.85 * db, rv), 1.0 - smoothstep(0.3 * iod, 1.0 * iod, -rv))
        lprof = 1.0 - smoothstep(0.8 * hl, 1.8 * hl, np.abs(ru))
        brow_prof = np.maximum(brow_prof, vprof * lprof)
    fwd[IDX["brow"]] = (-0.07 * iod * brow_prof * head)[..., None] * e_vf

    # ---------------------------------------------------------------- to normalised backward offsets
    bases = np.empty((K, H, W, 2), dtype=np.float32)
    bases[..., 0] = -fwd[..., 0] * (2.0 / W)
    bases[..., 1] = -fwd[..., 1] * (2.0 / H)

    # seam channel: < 0 only above the seam and between the mouth corners
    # ... and rising towards the corners, so the opening tapers to the corners even when spread/round
    # move the lips sideways relative to the (output-indexed) jaw field
    lift = 5.0 * jaw_px_max / w_in * np.clip(au - 0.6 * w_in, 0.0, None) ** 2 / w_in
    seam = np.maximum(d + lift, (au - w_out) * 1.0)
    seam = np.clip(seam, -40.0, 40.0).astype(np.float32)

    # ---------------------------------------------------------------- mouth crop + colours
    corners_uv = np.array([[-1.15 * w_out, np.min(up_v) - 4], [1.15 * w_out, np.min(up_v) - 4],
                           [-1.15 * w_out, np.max(lo_v) + jaw_px_max + 6], [1.15 * w_out, np.max(lo_v) + jaw_px_max + 6]])
    pts = origin + corners_uv[:, :1] * e_um + corners_uv[:, 1:] * e_vm
    x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, W - 1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 1, x0 + 1, W))
    y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, H - 1))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 1, y0 + 1, H))
    img = np.asarray(image[..., :3], dtype=np.float32)
    lips_mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(lips_mask, [np.round(L[list(LIPS_OUTER)]).astype(np.int32)], 255)
    inner_mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(inner_mask, [np.round(L[list(LIPS_INNER)]).astype(np.int32)], 255)
    lips_only = (lips_mask > 0) & (inner_mask == 0)
    lip_rgb = _median_color(img, lips_only, (150, 80, 80))
    cheek_mask = (face_mask > 0) & (np.abs(hv - (chin_v * 0.1)) < 0.3 * iod) & (lips_mask == 0)
    skin_rgb = _median_color(img, cheek_mask, (180, 140, 120))
    skin_lum = float(skin_rgb @ np.array([0.299, 0.587, 0.114]))
    cast = skin_rgb / max(float(skin_rgb.mean()), 1.0)  # the photo's colour cast (light, white balance)
    cavity = np.clip(lip_rgb * 0.16 * cast, 8, 50)
    central = np.abs(mu) < 0.6 * w_in
    edge_up = 0.75 * _median_color(img, central & (d > -6) & (d < -2), lip_rgb * 0.8)
    edge_lo = 0.75 * _median_color(img, central & (d > 2) & (d < 6), lip_rgb * 0.8)
    tongue = np.clip(lip_rgb * 0.62, 20, 170)
    ref = float(np.clip(skin_lum * 1.1, 140.0, 225.0))
    warm = skin_rgb / max(float(skin_rgb.max()), 1.0)  # the photo's colour cast, so teeth sit in its light
    teeth = (0.75 * np.array([0.98, 0.96, 0.90]) + 0.25 * warm) * ref
    mouth = MouthInfo(
        crop=(y0, x0, y1 - y0, x1 - x0),
        jaw_px=(np.stack([J, J_spread, J_round]) * jaw_px_max)[:, y0:y1, x0:x1].astype(np.float32),
        u_norm=(au / w_out)[y0:y1, x0:x1].astype(np.float32),
        cavity_rgb=cavity.astype(np.float32),
        tongue_rgb=tongue.astype(np.float32),
        teeth_rgb=teeth.astype(np.float32),
        edge_up_rgb=edge_up.astype(np.float32),
        edge_lo_rgb=edge_lo.astype(np.float32),
        synth_teeth=0.0 if rest_gap > 0.05 * iod else 1.0,
        iod_px=float(iod),
        rest_gap_iod=rest_gap / iod,
    )
    return BasisSet(bases=bases, seam=seam, mouth=mouth, iod_px=float(iod))
