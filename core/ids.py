"""Identifiers: ``<prefix>_<ULID>`` (SPEC), and the deterministic Ray names derived from a session id."""
from __future__ import annotations

from ulid import ULID

SESSION = "sess"
AVATAR = "avat"
ACCOUNT = "acct"
API_KEY = "key"
PACK = "pack"


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when ``value`` looks like ``<prefix>_<26-char ULID>``."""
    head, sep, tail = value.partition("_")
    return bool(sep) and head == prefix and len(tail) == 26 and tail.isalnum()


# Deterministic names of a session's long-lived Ray resources, so a restarted scheduler can diff
# "should exist" (the database) against "exists" (the cluster) and remove leaks.
WORKER_PREFIX = "worker-"
PLACEMENT_PREFIX = "sess-"


def worker_name(session_id: str) -> str:
    return f"{WORKER_PREFIX}{session_id}"


def placement_group_name(session_id: str) -> str:
    return f"{PLACEMENT_PREFIX}{session_id}"


def session_id_from_resource(name: str) -> str | None:
    """Inverse of worker_name / placement_group_name; None for names that are not ours."""
    for prefix in (WORKER_PREFIX, PLACEMENT_PREFIX):
        if name.startswith(prefix) and has_prefix(name[len(prefix):], SESSION):
            return name[len(prefix):]
    return None
