"""The Python SDK in one go: upload a face, create a session (platform ``proxy``: the deployment provides the
LiveKit room), speak through the session WebSocket, list, end, and read the bill.

    pip install -e clients/python
    AVATARS_BASE_URL=http://127.0.0.1:8000 AVATARS_API_KEY=ah_live_... python examples/sdk_quickstart.py face.jpg
"""
from __future__ import annotations

import sys

import numpy as np

from avatars_sdk import AvatarsClient, NotFoundError


def main(photo: str) -> None:
    with AvatarsClient() as client:  # base URL and key from AVATARS_BASE_URL / AVATARS_API_KEY
        avatar = client.upload_face(photo)  # a path, bytes, an http(s) URL or a data URI
        print("avatar", avatar.avatar_id)

        created = client.create_session(avatar.avatar_id, aspect_ratio="auto")  # room defaults to proxy
        session = created.session
        print("session", session.session_id, session.status, "room", session.room.model_extra.get("roomURL"))

        # Two seconds of a 220 Hz tone as float32 numpy audio at 24 kHz (bytes or a WAV path work too).
        tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(48000) / 24000)).astype(np.float32)
        with client.connect(session.session_id, session.session_token) as ws:
            ws.send_audio(tone, 24000)
            for event in ws.events():
                print("event", event["type"])
                if event["type"] == "playback.finished":
                    break

        print("active", [s.session_id for s in client.iter_sessions(status="active")])
        ended = client.end_session(session.session_id)
        print("ended", ended.end_reason, "billed minutes", ended.billing.minutes)
        try:
            client.get_session("sess_01JAAAAAAAAAAAAAAAAAAAAAAA")
        except NotFoundError as exc:
            print("error", exc.status, exc.code)


if __name__ == "__main__":
    main(sys.argv[1])
