"""A Pipecat pipeline whose bot speaks through an avatar of this platform (``AvatarVideoService``); the
README's Pipecat example, verbatim (a test checks they match).

    pip install -e 'clients/python[pipecat]'
    export AVATARS_BASE_URL=http://127.0.0.1:8000 AVATARS_API_KEY=ah_live_... AVATARS_AVATAR_ID=avat_...
    python examples/pipecat_avatar.py

It runs offline: generated speech-like audio stands in for a TTS service and a frame counter for the output
transport; it prints the session, the end of the greeting's playback, and the end reason.
"""
import asyncio
import os

import numpy as np
from pipecat.frames.frames import EndFrame, OutputImageRawFrame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from avatars_sdk.pipecat import AvatarVideoService


def greeting(seconds=3.0, rate=24000):  # what a TTS service emits for one sentence, in 20 ms frames
    t = np.arange(int(seconds * rate)) / rate
    voice = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.25 * np.sin(2 * np.pi * 420 * t)
    pcm = (voice * np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) * 0.25 * 32767).astype(np.int16)
    audio = [TTSAudioRawFrame(audio=pcm[i: i + rate // 50].tobytes(), sample_rate=rate, num_channels=1)
             for i in range(0, pcm.size, rate // 50)]
    return [TTSStartedFrame(), *audio, TTSStoppedFrame()]


class FrameCounter(FrameProcessor):  # stands in for transport.output()
    images = 0

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        self.images += isinstance(frame, OutputImageRawFrame)
        await self.push_frame(frame, direction)


async def main():
    # AVATARS_BASE_URL, AVATARS_API_KEY from the environment (or base_url=..., api_key=...)
    avatar = AvatarVideoService(avatar=os.environ["AVATARS_AVATAR_ID"], aspect_ratio="auto")
    screen = FrameCounter()
    # a real bot: Pipeline([transport.input(), stt, user_agg, llm, tts, avatar, transport.output(), assistant_agg])
    worker = PipelineWorker(Pipeline([avatar, screen]), idle_timeout_secs=None)
    ended = []

    @avatar.event_handler("on_session_started")
    async def on_session_started(service, session):
        print("session", session.session_id, flush=True)
        await worker.queue_frames(greeting())  # a real bot: the LLM's answer through the TTS service

    @avatar.event_handler("on_playback_finished")
    async def on_playback_finished(service, event):
        print(f"playback finished interrupted={event['interrupted']}", flush=True)
        await worker.queue_frame(EndFrame())  # the pipeline's end ends the session

    @avatar.event_handler("on_session_ended")
    async def on_session_ended(service, session):
        ended.append(session.end_reason)

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await runner.run()
    print("ended", ended[0] if ended else None, "frames", screen.images)


asyncio.run(main())
