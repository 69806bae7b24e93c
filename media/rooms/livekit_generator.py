"""The media session as livekit-agents' ``VideoGenerator``: the only place its items become LiveKit types.

``AvatarRunner`` pushes the agent's speech with :meth:`push_audio` (waiting while ``max_buffered_s`` of
speech is unplayed), calls :meth:`clear_buffer`, and iterates the generator for ``rtc.VideoFrame`` (every
tick) / ``rtc.AudioFrame`` (the tick's audio slice, only while speaking) / ``AudioSegmentEnd`` (after an
utterance's last frame), which it publishes through ``AVSynchronizer``. Pacing, backpressure and the
bounded AV queue are the media session's (:meth:`media.session.MediaSession.av_stream`).
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from media.session import AVItem, MediaSession, Picture, SpeechAudio

def to_livekit(item: AVItem) -> rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd:
    if isinstance(item, Picture):
        buffer_type = rtc.VideoBufferType.RGBA if item.format == "rgba" else rtc.VideoBufferType.I420
        return rtc.VideoFrame(item.width, item.height, buffer_type, item.data)
    if isinstance(item, SpeechAudio):
        return rtc.AudioFrame(item.data, item.sample_rate, 1, item.samples)
    return AudioSegmentEnd()


class LiveKitVideoGenerator(VideoGenerator):
    def __init__(self, media: MediaSession) -> None:
        self.media = media

    @property
    def epoch(self) -> int:
        """Bumped by every clear (the runner's guard against a stray ``lk.playback_started`` reads it)."""
        return self.media.epoch

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self.media.end_utterance()
            return
        await self.media.push_pcm_waiting(np.frombuffer(frame.data, dtype=np.int16), frame.sample_rate,
                                          frame.num_channels)

    def clear_buffer(self) -> None:
        self.media.interrupt()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._convert(self.media.av_stream())

    @staticmethod
    async def _convert(items: AsyncIterator[AVItem]) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for item in items:
            yield to_livekit(item)
