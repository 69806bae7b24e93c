"""The SDK's retries against a FAKE server (a small local HTTP server, not the app): it answers 429 and 503
with Retry-After, and drops the connection of a create after recording it, so the retry/idempotency logic
is exercised deterministically. The same client against the real app is in test_sdk_real_app.py."""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from avatars_sdk import (APIConnectionError, AsyncAvatarsClient, AvatarsClient, RateLimitError, RetryPolicy,
                         ServiceUnavailableError)

SESSION = {"session_id": "sess_01FAKE", "status": "started", "aspect_ratio": "4:3", "avatar_id": "avat_1",
           "created_at": None, "started_at": None, "ended_at": None, "expiration": None, "duration": 0,
           "metadata": {}, "room": {"platform": "proxy"}, "end_reason": None, "billing": None,
           "session_token": "st_x"}
CREATED = {"success": True, "session": SESSION, "message": "Session created successfully",
           "usage": {"concurrency": {"current": 1, "max": 5, "available": 4}, "minutes": {"total_remaining": 9}}}


class FakeApi:
    """Scripted answers per request; remembers each request's headers and the sessions made per key."""

    def __init__(self, script: list[tuple]):
        self.script, self.requests, self.sessions_by_key = list(script), [], {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})
                key = self.headers.get("Idempotency-Key")
                if key and self.command == "POST":
                    fake.sessions_by_key.setdefault(key, f"sess_{len(fake.sessions_by_key)}")
                step = fake.script.pop(0) if fake.script else (200, {}, {})
                if step == "drop":  # the request was handled, the response is lost
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, headers, payload = step
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def rate_limited(retry_after="2"):
    return (429, {"Retry-After": retry_after}, {"success": False, "error": {"code": "RATE_LIMITED",
                                                                           "message": "Too many requests"}})


def no_capacity(retry_after="3"):
    return (503, {"Retry-After": retry_after}, {"success": False, "error": {
        "code": "CAPACITY_UNAVAILABLE", "message": "No capacity", "details": {"waited_s": 3}}})


def test_create_retries_429_and_503_honouring_retry_after_with_one_idempotency_key():
    slept = []
    with FakeApi([rate_limited("2"), no_capacity("3"), (201, {}, CREATED)]) as fake:
        client = AvatarsClient(base_url=fake.url, api_key="ah_test_x", sleep=slept.append)
        out = client.create_session("avat_1")
    assert out.session.session_id == "sess_01FAKE" and out.usage.concurrency.available == 4
    assert slept == [2.0, 3.0]  # the server's Retry-After, not the SDK's backoff
    keys = {r["headers"]["Idempotency-Key"] for r in fake.requests}
    assert len(fake.requests) == 3 and len(keys) == 1 and next(iter(keys))
    assert json.loads(fake.requests[0]["body"])["room"] == {"platform": "proxy"}


def test_dropped_response_is_retried_with_the_same_key_so_one_session():
    slept = []
    with FakeApi(["drop", (201, {}, CREATED), (201, {}, CREATED)]) as fake:
        client = AvatarsClient(base_url=fake.url, api_key="ah_test_x", sleep=slept.append)
        client.create_session("avat_1")
        client.create_session("avat_1")  # a second logical create gets a key of its own
    first, retry, second = (r["headers"]["Idempotency-Key"] for r in fake.requests)
    assert first == retry != second and len(fake.sessions_by_key) == 2  # two logical creates, not three
    assert len(slept) == 1 and slept[0] > 0  # backoff (no Retry-After on a dropped connection)


def test_gives_up_after_max_retries_and_raises_the_typed_error():
    with FakeApi([no_capacity("1")] * 3) as fake:
        client = AvatarsClient(base_url=fake.url, api_key="ah_test_x", sleep=lambda s: None,
                               retry=RetryPolicy(max_retries=2))
        with pytest.raises(ServiceUnavailableError) as info:
            client.get_usage()
    err = info.value
    assert (err.status, err.code, err.retry_after, err.details) == (503, "CAPACITY_UNAVAILABLE", 1.0, {"waited_s": 3})
    assert len(fake.requests) == 3


def test_concurrency_limit_is_not_retried():
    answer = (429, {}, {"success": False, "error": {"code": "CONCURRENCY_LIMIT_REACHED", "message": "max",
                                                     "details": {"current": 1, "max": 1}}})
    with FakeApi([answer]) as fake:
        client = AvatarsClient(base_url=fake.url, api_key="ah_test_x", sleep=lambda s: pytest.fail("slept"))
        with pytest.raises(RateLimitError) as info:
            client.create_session("avat_1")
    assert info.value.details == {"current": 1, "max": 1} and len(fake.requests) == 1


def test_non_replayable_post_is_not_resent_after_a_dropped_connection():
    with FakeApi(["drop", (201, {}, {})]) as fake:
        client = AvatarsClient(base_url=fake.url, api_key="ah_test_x", sleep=lambda s: None)
        with pytest.raises(APIConnectionError):
            client.create_webhook("https://example.com/hook")
    assert len(fake.requests) == 1


def test_async_client_retries_the_same_way():
    asyncio.run(_async_retries())


async def _async_retries():
    slept = []

    async def sleep(s):
        slept.append(s)

    with FakeApi([rate_limited("1"), (201, {}, CREATED)]) as fake:
        async with AsyncAvatarsClient(base_url=fake.url, api_key="ah_test_x", sleep=sleep) as client:
            out = await client.create_session("avat_1", platform="livekit", url="wss://x", token="t")
    assert out.session.status == "started" and slept == [1.0]
    assert fake.requests[0]["headers"]["Idempotency-Key"] == fake.requests[1]["headers"]["Idempotency-Key"]
    assert json.loads(fake.requests[0]["body"])["room"] == {"platform": "livekit", "url": "wss://x", "token": "t"}
