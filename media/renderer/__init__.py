"""The avatar renderer: a lip-synced talking head from one photo, driven by audio, batched in torch.

Weights-free default (:class:`DisplacementRenderer`): displacement-field bases built once per avatar
from its face rig (jaw open, lip spread/round/press/close, the opening's shape following the lips,
blinks, brow raise, small head rotations, lift), blended per frame from audio features (loudness and
formants) and idle motion, applied with one batched ``grid_sample``; the lips stay the photo's and the
mouth interior (shaded cavity, tongue, teeth) is painted between them where the jaw opens a gap. Any other
renderer (e.g. a neural one, where weights exist) implements the same :class:`Renderer` interface.

How the session worker drives it
--------------------------------
::

    renderer = DisplacementRenderer(device="cuda")          # one per process / GPU; "cpu" works too
    opts = OutputOptions.for_aspect("4:3", fps=25, sample_rate=48000, format="i420")  # 640x480
    sess = renderer.open_session(aligned_rgb, rig, opts, session_id=sid)  # joins at the next step
    # (or: sess = renderer.prepare(...) in a thread, then renderer.add(sess) — prepare is the slow part)

    # from the room side, any thread, any rate, faster or slower than real time:
    uid = sess.push_audio(pcm16_bytes, sample_rate=24000, num_channels=1)   # → utterance id
    sess.end_utterance()                                     # the byte stream closed
    for ev in sess.clear():                                  # lk.clear_buffer
        send_playback_finished(ev.position, interrupted=True)   # one per dropped utterance

    # render loop, paced by the caller at opts.fps (see FramePacer):
    for res in renderer.step():                              # one FrameResult per session
        publish(res.frame, res.audio)                        # frame on the renderer's device:
                                                             #   rgba (H, W, 4) uint8 or i420 (H*W*3/2,)
                                                             # audio: int16, exactly this frame's slice
        for ev in res.events:                                # after publishing this frame:
            if ev.kind == "started":  rpc("lk.playback_started")
            if ev.kind == "finished": rpc("lk.playback_finished", position=ev.position, interrupted=False)
        state = "speaking" if res.speaking else "idle"       # res.mouth_open: commanded opening 0..1

    renderer.close_session(sess)                             # leaves the batch before the next step

Guarantees: frame ``k`` carries ``floor((k+1)·rate/fps) − floor(k·rate/fps)`` samples (``rate/fps``
when whole) — the audio slices of an utterance, concatenated, are exactly its audio resampled to the
output rate (zero-padded to the end of its last frame), so an utterance of ``d`` seconds spans
``ceil(d·fps)`` frames and there is no drift; every step yields a frame for every session (idle motion
without speech, a silent frame when speech arrives late: the video never stops); after ``clear()`` the
next frame has the mouth at rest; a session renders the same frames alone or batched with others; the
same code runs on CPU and CUDA.

Interface
---------
- ``OutputOptions(width=512, height=512, fps=25, sample_rate=48000, format="rgba"|"i420")``,
  ``OutputOptions.for_aspect("4:3"|"3:4"|"1:1", **kw)``
- ``Renderer.open_session(image, rig, options=None, *, motion=None, session_id=None) -> RenderSession``
- ``Renderer.close_session(session_or_id)``; ``Renderer.step() -> list[FrameResult]``; ``Renderer.sessions``
- ``RenderSession.push_audio(pcm: bytes | ndarray, sample_rate, num_channels=1) -> int``
- ``RenderSession.end_utterance() -> int | None``; ``RenderSession.clear() -> list[UtteranceEvent]``
- ``RenderSession.speaking``, ``RenderSession.buffered_seconds``
- ``FrameResult``: session_id, frame_index, pts, frame, audio, sample_rate, speaking, mouth_open,
  utterance_id, utterance_position, events, width, height, format, weights
- ``UtteranceEvent(kind="started"|"finished", utterance_id, position, interrupted)``
- ``MotionOptions(head_motion, blinks, breathing, brows, seed, jaw_max_iod, ...)``
- ``DisplacementRenderer(device).render_weights(session, {"jaw": .5, ...})``: a still with explicit
  basis weights (contact sheets, tests).

Tools: ``python -m media.renderer.cli render|sheet`` (MP4 with audio, contact sheet PNG),
``python -m bench.render`` (batch step benchmark).
"""
from .audio import StreamingResampler, frame_samples, pcm16_to_array, resample
from .default import DisplacementRenderer, DisplacementSession
from .interface import (
    FrameResult,
    OutputOptions,
    Renderer,
    RenderSession,
    UtteranceEvent,
)
from .motion import BASIS_NAMES, MotionOptions
from .pacing import FramePacer

__all__ = [
    "BASIS_NAMES",
    "DisplacementRenderer",
    "DisplacementSession",
    "FramePacer",
    "FrameResult",
    "MotionOptions",
    "OutputOptions",
    "RenderSession",
    "Renderer",
    "StreamingResampler",
    "UtteranceEvent",
    "frame_samples",
    "pcm16_to_array",
    "resample",
]
