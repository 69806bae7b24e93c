"""A Pipecat pipeline whose bot speaks through an avatar of this platform (``AvatarVideoService``).

    pip install -e 'clients/python[pipecat]'
    export AVATARS_BASE_URL=http://127.0.0.1:8000 AVATARS_API_KEY=ah_live_... AVATARS_AVATAR_ID=avat_...
    python examples/pipecat_avatar.py

It runs offline: generated speech-like audio stands in for a TTS service and a frame counter for the output
transport. In a real bot the service goes right after the TTS service and before the output transport, e.g.
``Pipeline([transport.input(), stt, user_aggregator, llm, tts, avatar, transport.output(), assistant_aggregator])``.
"""
from __future__ import annotations

import asyncio
import os

import numpy as np
from pipecat.frames.frames import EndFrame, OutputImageRawFrame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from avatars_sdk.pipecat import AvatarVideoService


def greeting(seconds: float = 3.0, rate: int = 24000) -> list:
    """What a TTS service emits for one sentence: syllable-like bursts of a voiced tone in 20 ms frames."""
    t = np.arange(int(seconds * rate)) / rate
    voice = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.25 * np.sin(2 * np.pi * 420 * t)
    pcm = (voice * np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) * 0.25 * 32767).astype(np.int16)
    step = rate // 50
    audio = [TTSAudioRawFrame(audio=pcm[i: i + step].tobytes(), sample_rate=rate, num_channels=1)
             for i in range(0, pcm.size, step)]
    return [TTSStartedFrame(), *audio, TTSStoppedFrame()]


class FrameCounter(FrameProcessor):
    """Stands in for ``transport.output()``: counts the avatar's video frames."""

    images = 0

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            self.images += 1
        await self.push_frame(frame, direction)


async def main() -> None:
    # AVATARS_BASE_URL and AVATARS_API_KEY from the environment (or base_url=..., api_key=...)
    avatar = AvatarVideoService(avatar=os.environ["AVATARS_AVATAR_ID"], aspect_ratio="auto")
    screen = FrameCounter()
    worker = PipelineWorker(Pipeline([avatar, screen]), idle_timeout_secs=None)
    ended = []

    @avatar.event_handler("on_session_started")
    async def on_session_started(service, session):
        print("session", session.session_id, flush=True)
        await worker.queue_frames(greeting())  # in a real bot: the LLM's answer through the TTS service

    @avatar.event_handler("on_playback_finished")
    async def on_playback_finished(service, event):
        print(f"playback finished interrupted={event['interrupted']}", flush=True)
        await worker.queue_frame(EndFrame())  # the pipeline's end ends the session

    @avatar.event_handler("on_session_ended")
    async def on_session_ended(service, session):
        ended.append(session)

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await runner.run()
    print("ended", ended[0].end_reason if ended else None, "frames", screen.images)


if __name__ == "__main__":
    asyncio.run(main())
