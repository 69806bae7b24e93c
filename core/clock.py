"""Time in one place (UTC, aware), so policy code can be tested with explicit instants."""
from __future__ import annotations

import math
from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z suffix and millisecond precision, as the SPEC shows timestamps."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def minutes_rounded_up(seconds: float) -> int:
    """Whole minutes, rounded up; 0 only for a session that never ran."""
    if seconds <= 0:
        return 0
    return int(math.ceil(seconds / 60.0 - 1e-9))
