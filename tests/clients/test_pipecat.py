"""The Pipecat service (``avatars_sdk.pipecat.AvatarVideoService``) in a real Pipecat pipeline against the real
app and a real LiveKit server: a generated TTS source (speech-like audio from ``synth_speech``, emitted as a
TTS service emits it) → the avatar service → a sink that collects what comes out of the pipeline. The
avatar's frames come out at the session's size, its mouth moves during speech and rests after an
interruption, and the pipeline's end ends the session (user_requested, billed)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from pipecat.frames.frames import (EndFrame, Frame, InterruptionFrame, OutputImageRawFrame, SpeechOutputAudioRawFrame,
                                   TTSAudioRawFrame, TTSSpeakFrame, TTSStartedFrame, TTSStoppedFrame)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker, ProcessorUnusablePolicy
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from media.renderer.speech import synth_speech
from avatars_sdk import AvatarsClient, AvatarsError
from avatars_sdk.pipecat import AvatarVideoService
from bench.viewer import SOUND_RMS, locate_mouth_box, mouth_brightness
from tests.test_livekit_rooms import livekit_deployment, run, until

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
WORD_S = 0.4  # seconds of generated speech per word


@pytest.fixture(scope="module")
def lk_app(ray_cluster, livekit_server, tmp_path_factory):
    with livekit_deployment(ray_cluster, tmp_path_factory.mktemp("api-lk-pipecat"), "api-lk-pipecat", livekit_server) \
            as app:
        yield app


@pytest.fixture(scope="module")
def grace(lk_app):
    tenant = lk_app.tenant("growth")
    with AvatarsClient(base_url=lk_app.base_url, api_key=tenant.api_key) as sdk:
        avatar_id = sdk.upload_face(cbook.get_sample_data("grace_hopper.jpg").read(), filename="grace.jpg").avatar_id
    return tenant, avatar_id


class GeneratedTTS(FrameProcessor):
    """An offline stand-in for a TTS service: a ``TTSSpeakFrame`` becomes what a TTS service emits for it
    (``TTSStartedFrame``, 20 ms ``TTSAudioRawFrame``s faster than real time, ``TTSStoppedFrame``), with
    ``WORD_S`` seconds of speech-like audio per word."""

    def __init__(self, sample_rate: int = 24000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate, self.utterances = sample_rate, 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TTSSpeakFrame):
            await self.push_frame(frame, direction)
            return
        self.utterances += 1
        audio = synth_speech(WORD_S * len(frame.text.split()), self.rate, seed=self.utterances).audio
        await self.push_frame(TTSStartedFrame())
        step = self.rate // 50
        for i in range(0, audio.size, step):
            await self.push_frame(TTSAudioRawFrame(audio=audio[i: i + step].tobytes(), sample_rate=self.rate,
                                                   num_channels=1))
        await self.push_frame(TTSStoppedFrame())


class Sink(FrameProcessor):
    """What comes out of the pipeline: image sizes and a mouth measure per image, sound per audio frame."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sizes: list[tuple[int, int]] = []
        self.mouths: list[float | None] = []
        self.sound: list[bool] = []
        self.passed_tts = 0  # TTS audio frames that went past the service (there should be none)
        self.mouth_box: tuple[float, float, float, float] | None = None
        self.last: np.ndarray | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            w, h = frame.size
            rgb = np.frombuffer(frame.image, dtype=np.uint8).reshape(h, w, 3)
            self.last = rgb
            self.sizes.append((w, h))
            self.mouths.append(None if self.mouth_box is None else mouth_brightness(rgb, self.mouth_box))
        elif isinstance(frame, SpeechOutputAudioRawFrame):
            pcm = np.frombuffer(frame.audio, dtype=np.int16).astype(np.float32)
            self.sound.append(bool(pcm.size) and float(np.sqrt(np.mean(pcm ** 2))) > SOUND_RMS)
        elif isinstance(frame, TTSAudioRawFrame):
            self.passed_tts += 1
        await self.push_frame(frame, direction)


def test_pipeline_speaks_through_the_avatar_interrupts_and_its_end_bills(lk_app, grace):
    tenant, avatar_id = grace

    async def main():
        service = AvatarVideoService(api_key=tenant.api_key, base_url=lk_app.base_url, avatar=avatar_id,
                                     aspect_ratio="auto")
        started, finished, sessions, ended = [], [], [], []
        service.add_event_handler("on_session_started", lambda _, s: sessions.append(s))
        service.add_event_handler("on_playback_started", lambda _: started.append(True))
        service.add_event_handler("on_playback_finished", lambda _, e: finished.append(e))
        service.add_event_handler("on_session_ended", lambda _, s: ended.append(s))
        sink = Sink()
        worker = PipelineWorker(Pipeline([GeneratedTTS(), service, sink]),
                                params=PipelineParams(audio_out_sample_rate=24000), idle_timeout_secs=None)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        try:
            # The avatar's frames come out of the pipeline: the session's size (the SFU forwards simulcast
            # layers, lower ones first: the top one is the session's size), and its audio.
            session = (await until(lambda: sessions, 120, "the session created on StartFrame"))[0]
            assert session.aspect_ratio == "3:4" and service.session_id == session.session_id  # auto: portrait
            await until(lambda: (480, 640) in sink.sizes, 120, "the avatar's 480x640 frames out of the pipeline")
            assert max(sink.sizes) == (480, 640) and all(w * 4 == h * 3 for w, h in sink.sizes), set(sink.sizes)
            await until(lambda: len(sink.sound) >= 25, 60, "the avatar's audio out of the pipeline")

            # At rest: 50 frames (2 s at 25 fps) of the idle mouth.
            sink.mouth_box = locate_mouth_box(sink.last)
            i_rest = len(sink.mouths)
            await until(lambda: len(sink.mouths) >= i_rest + 50, 60, "50 frames at rest")
            rest = [m for m in sink.mouths[i_rest:] if m is not None]
            threshold = np.mean(rest) - max(6 * np.std(rest), 4.0)

            # One utterance: played to the end, the mouth opens, the avatar's sound comes out.
            i_speech, a_speech = len(sink.mouths), len(sink.sound)
            await worker.queue_frame(TTSSpeakFrame("one two three four five six seven"))  # 2.8 s
            await until(lambda: finished, 60, "lk.playback_finished")
            assert started and finished[0] == {"playback_position": pytest.approx(2.8, abs=0.04),
                                               "interrupted": False, "synchronized_transcript": None}
            assert min(sink.mouths[i_speech:]) < threshold, "the mouth never opened"
            assert any(sink.sound[a_speech:]), "no sound of the avatar came out of the pipeline"
            assert sink.passed_tts == 0  # the TTS audio went to the avatar, not past it

            # A long utterance interrupted a second in: the avatar says it stopped, the mouth rests.
            await worker.queue_frame(TTSSpeakFrame(" ".join(["word"] * 25)))  # 10 s
            await until(lambda: len(started) == 2, 60, "the second lk.playback_started")
            i_playing = len(sink.mouths)
            await until(lambda: len(sink.mouths) >= i_playing + 25, 30, "25 frames of the second utterance")
            await worker.queue_frame(InterruptionFrame())
            await until(lambda: len(finished) == 2, 10, "the interrupted lk.playback_finished")
            assert finished[1]["interrupted"] is True, finished and finished[1]["playback_position"] < 9.0
            # What was in flight to us drains (25 frames), then 25 frames at rest and silence.
            i_after = len(sink.mouths)
            await until(lambda: len(sink.mouths) >= i_after + 50 and len(sink.sound) > 100, 30, "frames after")
            after = sink.mouths[i_after + 25:]
            assert np.mean(after) > threshold and min(after) > np.mean(rest) - max(8 * np.std(rest), 6.0), \
                "the mouth did not rest after the interruption"
            assert not any(sink.sound[-50:]), "the avatar kept sounding after the interruption"
            print(f"mouth at rest {np.mean(rest):.1f}±{np.std(rest):.2f}, "
                  f"speech min {min(sink.mouths[i_speech:]):.1f}, "
                  f"after the interruption mean {np.mean(after):.1f} min {min(after):.1f}; "
                  f"interrupted at {finished[1]['playback_position']:.2f}s")  # shown with -rP
            # Nothing more played out, and no stray lk.playback_started after the clear (a race in
            # livekit-agents' AvatarRunner that media/rooms/livekit_room.AvatarTrackRunner closes).
            assert len(finished) == 2 and len(started) == 2, (started, finished)

            # The pipeline's end ends the session (ours: user_requested) and leaves the room.
            await worker.queue_frame(EndFrame())
            await asyncio.wait_for(running, 120)
        finally:
            if not running.done():
                await runner.cancel()
                await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 60)
        assert ended and ended[0].end_reason == "user_requested"
        with AvatarsClient(base_url=lk_app.base_url, api_key=tenant.api_key) as sdk:
            done = sdk.get_session(session.session_id)
        assert done.status == "ended" and done.end_reason == "user_requested" and done.billing.minutes >= 1

    run(main(), timeout=500)


def test_cancel_ends_the_session_and_a_failed_start_is_a_clear_error(lk_app, grace):
    """A cancelled pipeline still ends its session; an unknown avatar makes the service unusable with the
    API's error (a worker with ProcessorUnusablePolicy.CANCEL then stops by itself) and leaves no session."""
    tenant, avatar_id = grace
    sdk = AvatarsClient(base_url=lk_app.base_url, api_key=tenant.api_key)

    async def main():
        service = AvatarVideoService(api_key=tenant.api_key, base_url=lk_app.base_url, avatar=avatar_id)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(PipelineWorker(Pipeline([service]), idle_timeout_secs=None))
        running = asyncio.create_task(runner.run())
        try:
            await until(lambda: service.session_id and service._avatar_ready.is_set(), 120, "the avatar's video")
        finally:
            await runner.cancel()
            await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 60)
        done = sdk.get_session(service.session_id)
        assert done.status == "ended" and done.end_reason == "user_requested"

        active_before = [s.session_id for s in sdk.list_sessions(status="active").sessions]
        bad = AvatarVideoService(api_key=tenant.api_key, base_url=lk_app.base_url,
                                 avatar="avat_01JAAAAAAAAAAAAAAAAAAAAAAA")
        worker = PipelineWorker(Pipeline([bad]), idle_timeout_secs=None,
                                processor_unusable_policy=ProcessorUnusablePolicy.CANCEL)
        errors = []
        worker.add_event_handler("on_pipeline_error", lambda _, frame: errors.append(frame.error))
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(runner.run(), 120)  # ends by itself
        assert any("avatar session failed to start: 404 AVATAR_NOT_FOUND" in e for e in errors), errors
        assert bad.session_id is None
        assert [s.session_id for s in sdk.list_sessions(status="active").sessions] == active_before

    run(main(), timeout=300)
    sdk.close()


def test_missing_configuration_is_a_clear_error(monkeypatch):
    for name in ("AVATARS_AVATAR_ID", "AVATARS_BASE_URL", "AVATARS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(AvatarsError, match="avatar"):
        AvatarVideoService(api_key="ah_test_x")
    with pytest.raises(AvatarsError, match="API key"):
        AvatarVideoService(avatar="avat_1")


def test_pipecat_example_runs(lk_app, grace):
    """examples/pipecat_avatar.py (the README's Pipecat example) against the deployment."""
    tenant, avatar_id = grace
    env = {**os.environ, "AVATARS_BASE_URL": lk_app.base_url, "AVATARS_API_KEY": tenant.api_key,
           "AVATARS_AVATAR_ID": avatar_id}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "pipecat_avatar.py")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    print(out.stdout)  # shown with -rP
    lines = out.stdout.splitlines()
    assert lines[0].startswith("session sess_"), lines
    assert "playback finished interrupted=False" in lines
    assert lines[-1].startswith("ended user_requested frames ") and int(lines[-1].split()[-1]) > 0, lines


def test_readme_pipecat_example_is_the_example_file():
    """The README's block is what test_pipecat_example_runs runs."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Pipecat"):]
    start = section.index("```python\n") + len("```python\n")
    block = section[start:section.index("```\n", start)]
    example = (ROOT / "examples" / "pipecat_avatar.py").read_text()
    assert example.endswith(block), "README's Pipecat example and examples/pipecat_avatar.py differ"
