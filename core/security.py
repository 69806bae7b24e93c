"""Secrets: API keys and session tokens are shown once and stored only as SHA-256 hashes.

The keys carry 32 random base62 characters (~190 bits), so a plain SHA-256 is the right hash: there is
nothing to brute-force, and a fast hash keeps the per-request lookup cheap.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

_ALPHABET = string.ascii_letters + string.digits
KEY_PREFIXES = ("ah_live_", "ah_test_")


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_api_key(live: bool = True) -> str:
    return ("ah_live_" if live else "ah_test_") + _random(32)


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIXES) and len(value) == 40 and value[8:].isalnum()


def new_session_token() -> str:
    return "st_" + _random(40)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def sign(secret_key: str, message: str) -> str:
    """HMAC-SHA256 of ``message`` (used for signed URLs and preview tokens)."""
    return hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).hexdigest()


def fernet(secret_key: str, purpose: str) -> Fernet:
    """A Fernet (AES-128-CBC + HMAC) keyed from the deployment's secret for one purpose, so values kept
    at rest (e.g. a replayable response with its session token) are unreadable without the secret."""
    import base64

    from cryptography.fernet import Fernet

    raw = hmac.new(secret_key.encode(), f"fernet:{purpose}".encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(raw))
