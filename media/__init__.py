"""The media of a session, without Ray: the renderer (audio in → frames out), the room adapters
(LiveKit, Daily, preview) that carry it, and the avatar assets a worker process loads. The session
worker actor (``actors/worker.py``) owns one of these per session."""
