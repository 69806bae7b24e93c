"""Verify a webhook delivery (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; HMAC-SHA256 with the endpoint's ``whsec_...`` secret)."""
from __future__ import annotations

from typing import Any, Mapping

from .errors import WebhookVerificationError


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> dict[str, Any]:
    """The event (``{"type", "timestamp", "data"}``) when the signature and timestamp (±5 min) verify;
    otherwise ``WebhookVerificationError``. Pass the raw body, before any JSON parsing."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError as _Invalid

    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        return Webhook(secret).verify(payload, lowered)
    except _Invalid as exc:
        raise WebhookVerificationError(str(exc)) from exc
