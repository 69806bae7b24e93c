"""The face pipeline (non-HTTP part of upload-face): decode -> detect -> landmarks -> align -> rig.

Modules (import what you need; nothing heavy is imported here):

- ``models``: set-up of the MediaPipe model files (``python -m pipelines.faces.models``) and their cache;
- ``decode``: untrusted bytes -> RGB array (format sniffing, size and pixel caps, EXIF orientation);
- ``analyze``: ``detect_faces``, ``face_landmarks``, ``analyze_single_face`` (the prominence rules);
- ``align``: ``PROFILES`` and ``align_face`` (canonical framing per orientation);
- ``pipeline``: ``process_face``, ``process_face_array``, ``encode_outputs``;
- ``tasks``: ``process_face_task``, the Ray task (the only module importing Ray);
- ``url_fetch``: ``fetch_image``, SSRF-safe fetching of ``image_url``.
"""
