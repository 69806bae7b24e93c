"""The Python SDK against the real app (real Serve over HTTP, real Ray, SQLite and PostgreSQL, real face
models and photos): every endpoint, the error codes a client meets as typed exceptions, pagination, the
session WebSocket and a real rate limit. Retries on 429/503 are shown against a fake server beside this
file (test_sdk_retries_fake_server.py)."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from avatars_sdk import (AsyncAvatarsClient, AuthenticationError, AvatarsClient, BadRequestError, NotFoundError,
                         PayloadError, PermissionDeniedError, RateLimitError, RetryPolicy, ServiceUnavailableError,
                         SessionSocketError, encode_image_base64, models)
from tests.support import faces

NO_RETRY = RetryPolicy(max_retries=0)


@pytest.fixture(scope="module")
def photos():
    return {"astronaut": faces.encode(faces.astronaut()), "grace": faces.encode(faces.grace()),
            "cat": faces.encode(faces.cat()), "two": faces.encode(faces.two_faces())}


def client_for(api, tenant, **kw) -> AvatarsClient:
    return AvatarsClient(base_url=api.base_url, api_key=tenant.api_key, retry=kw.pop("retry", NO_RETRY), **kw)


def livekit_room():
    return {"platform": "livekit", "url": "wss://lk.example.com", "token": "room-token-secret"}


def test_sessions_usage_and_pagination(api):
    tenant = api.tenant("explorer", max_concurrent_sessions=10)
    avatar = api.public_avatar()
    with client_for(api, tenant) as client:
        made = client.create_session(avatar, room=livekit_room(), aspect_ratio="1:1", metadata={"user": "42"})
        assert isinstance(made, models.CreateSessionResponse) and made.message == "Session created successfully"
        s = made.session
        assert s.session_id.startswith("sess_") and s.status == "started" and s.session_token.startswith("st_")
        assert s.aspect_ratio == "1:1" and s.metadata == {"user": "42"} and s.room.platform == "livekit"
        assert made.usage.concurrency.current == 1

        got = client.get_session(s.session_id)
        assert got.session_id == s.session_id and got.status == "started" and not hasattr(got, "session_token")

        usage = client.get_usage()
        assert [x.session_id for x in usage.active_sessions] == [s.session_id] and usage.plan.key == "explorer"

        ended = client.end_session(s.session_id)
        assert ended.status == "ended" and ended.end_reason == "user_requested" and ended.billing.minutes == 1
        assert client.end_session(s.session_id) == ended  # idempotent

        more = [client.create_session(avatar, room=livekit_room()).session.session_id for _ in range(4)]
        page = client.list_sessions(limit=2)
        assert len(page.sessions) == 2 and page.has_more and page.next_cursor
        every = [x.session_id for x in client.iter_sessions(page_size=2)]
        assert every == [*reversed(more), s.session_id]  # newest first, across three pages
        assert [x.session_id for x in client.iter_sessions(status="active", page_size=3)] == list(reversed(more))
        for sid in more:
            client.end_session(sid)
        assert client.get_usage().concurrency.current == 0


def test_async_client_and_iterator(api):
    tenant = api.tenant("explorer")
    avatar = api.public_avatar()

    async def run():
        async with AsyncAvatarsClient(base_url=api.base_url, api_key=tenant.api_key, retry=NO_RETRY) as client:
            made = await client.create_session(avatar, room=livekit_room())
            sid = made.session.session_id
            assert [x.session_id async for x in client.iter_sessions(page_size=1)] == [sid]
            ended = await client.end_session(sid)
            with pytest.raises(NotFoundError) as info:
                await client.get_session("sess_01JAAAAAAAAAAAAAAAAAAAAAAA")
            return ended, info.value

    ended, missing = asyncio.run(run())
    assert ended.status == "ended" and missing.code == "SESSION_NOT_FOUND" and missing.status == 404


def test_avatars_upload_from_path_bytes_and_base64_list_download_delete(api, photos, tmp_path, face_models):
    tenant = api.tenant("explorer")
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(photos["astronaut"])
    with client_for(api, tenant) as client:
        from_path = client.upload_face(path)
        assert from_path.avatar_id.startswith("avat_") and from_path.created
        assert "user_exclusive" in from_path.tags and tenant.account_id in from_path.tags
        from_bytes = client.upload_face(photos["grace"])
        from_b64 = client.upload_face(encode_image_base64(photos["grace"]))
        assert from_b64.avatar_id == from_bytes.avatar_id and not from_b64.created  # same image, same avatar

        listed = client.list_avatars()
        assert {a.avatar_id for a in listed.my_avatars} == {from_path.avatar_id, from_bytes.avatar_id}
        image = client.download(from_path.image_url)
        preview = client.download(from_path.preview_url)
        assert image[:2] == preview[:2] == b"\xff\xd8"  # JPEG

        session = client.create_session(from_path.avatar_id, room=livekit_room(), aspect_ratio="auto").session
        assert session.avatar_id == from_path.avatar_id
        client.end_session(session.session_id)

        deleted = client.delete_avatar(from_bytes.avatar_id)
        assert deleted.avatar_id == from_bytes.avatar_id
        assert {a.avatar_id for a in client.list_avatars().my_avatars} == {from_path.avatar_id}
        with pytest.raises(NotFoundError):
            client.delete_avatar(from_bytes.avatar_id)


def expect(error_type, code, call, *args, **kwargs):
    with pytest.raises(error_type) as info:
        call(*args, **kwargs)
    err = info.value
    assert err.code == code and err.message, (err.code, err.message)
    return err


def test_error_codes_as_typed_exceptions(api, photos, face_models):
    tenant = api.tenant("explorer", max_concurrent_sessions=1, included_minutes=5)
    other, free = api.tenant("explorer"), api.tenant("free")
    avatar = api.public_avatar()
    client, free_client = client_for(api, tenant), client_for(api, free)

    err = expect(AuthenticationError, "UNAUTHORIZED",
                 AvatarsClient(base_url=api.base_url, api_key="ah_live_" + "x" * 32).get_usage)
    assert err.status == 401 and err.message == "Invalid API key"
    expect(BadRequestError, "INVALID_ASPECT_RATIO", client.create_session, avatar, room=livekit_room(),
           aspect_ratio="16:9")
    expect(BadRequestError, "INVALID_ROOM_PLATFORM", client.create_session, avatar, room={"platform": "zoom"})
    expect(BadRequestError, "INVALID_ROOM_URL", client.create_session, avatar, platform="livekit", url="ftp://x",
           token="t")
    expect(BadRequestError, "INVALID_ROOM", client.create_session, avatar, platform="livekit", url="wss://x",
           token="")
    expect(BadRequestError, "INVALID_METADATA", client.create_session, avatar, room=livekit_room(),
           metadata={"blob": "x" * 17000})
    expect(BadRequestError, "INVALID_AVATAR", client.create_session, "", room=livekit_room())
    expect(BadRequestError, "INVALID_CURSOR", client.list_sessions, cursor="garbage!")
    expect(NotFoundError, "AVATAR_NOT_FOUND", client.create_session, "avat_01JAAAAAAAAAAAAAAAAAAAAAAA",
           room=livekit_room())
    expect(PermissionDeniedError, "AVATAR_ACCESS_DENIED", client.create_session,
           api.private_avatar(other.account_id), room=livekit_room())
    expect(PermissionDeniedError, "PLAN_REQUIRES_AVATAR_ID", free_client.create_session,
           encode_image_base64(photos["astronaut"]), room=livekit_room())
    expect(PermissionDeniedError, "AVATAR_LIMIT_REACHED", free_client.upload_face, photos["astronaut"])
    expect(NotFoundError, "SESSION_NOT_FOUND", client.end_session, "sess_01JAAAAAAAAAAAAAAAAAAAAAAA")
    expect(BadRequestError, "NO_FACE_DETECTED", client.upload_face, photos["cat"])
    expect(BadRequestError, "MULTIPLE_FACES", client.upload_face, photos["two"])
    expect(PayloadError, "UNSUPPORTED_IMAGE", client.upload_face, b"not an image at all")
    expect(BadRequestError, "IMAGE_URL_NOT_ALLOWED", client.upload_face, "http://127.0.0.1:1/face.jpg")

    running = client.create_session(avatar, room=livekit_room()).session.session_id
    err = expect(RateLimitError, "CONCURRENCY_LIMIT_REACHED", client.create_session, avatar, room=livekit_room())
    assert err.status == 429 and err.details == {"current": 1, "max": 1}
    client.end_session(running)
    api.store.accounts.set_plan(tenant.account_id, "explorer", max_concurrent_sessions=1, included_minutes=1)
    expect(PermissionDeniedError, "INSUFFICIENT_MINUTES", client.create_session, avatar, room=livekit_room())
    # Nothing above left a session running.
    assert client.get_usage().concurrency.current == 0
    client.close()
    free_client.close()


def test_session_websocket_refuses_a_wrong_token(api):
    tenant = api.tenant("explorer")
    with client_for(api, tenant) as client:
        sid = client.create_session(api.public_avatar(), room=livekit_room()).session.session_id
        with pytest.raises(SessionSocketError, match="Invalid session_id or session_token"):
            with client.connect(sid, "st_wrong"):
                pass
        client.end_session(sid)


def test_real_rate_limit_and_real_no_capacity(special_api):
    """429 RATE_LIMITED and 503 CAPACITY_UNAVAILABLE from real deployments, with Retry-After, as typed errors;
    the retrying client waits what the server says (the sleep is recorded, not slept)."""
    api = special_api("api-sdk-limits", rate_limit_per_minute=3, warm_pool_size=0, slot_resource="no_such_slot",
                      placement_timeout_s=1.0)
    tenant = api.tenant("explorer")
    if 60 - time.time() % 60 < 10:  # don't straddle the rate limiter's window
        time.sleep(60 - time.time() % 60 + 0.1)
    slept = []
    client = client_for(api, tenant, retry=RetryPolicy(max_retries=1), sleep=slept.append)
    err = expect(ServiceUnavailableError, "CAPACITY_UNAVAILABLE", client.create_session, api.public_avatar(),
                 room=livekit_room())
    assert err.retry_after and err.retry_after > 0 and slept == [err.retry_after]  # retried once, same wait
    plain = client_for(api, tenant)
    plain.get_usage()  # the third request of the minute is allowed, the fourth is not
    err = expect(RateLimitError, "RATE_LIMITED", plain.get_usage)
    assert err.status == 429 and 1 <= err.retry_after <= 60
    plain.close()
    client.close()


class DropFirstResponse(httpx.HTTPTransport):
    """A real transport to the real app that loses the first create's response after the app handled it."""

    def __init__(self):
        super().__init__()
        self.dropped = 0

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/v1/sessions") and not self.dropped:
            self.dropped += 1
            response.read()
            response.close()
            raise httpx.ReadError("connection lost before the response", request=request)
        return response


def test_create_retried_after_a_dropped_response_makes_one_session(api):
    tenant = api.tenant("explorer")
    avatar = api.public_avatar()
    probe = {"Idempotency-Key": "probe-" + tenant.account_id}
    ids = {api.http.post("/v1/sessions", json=api.create_body(avatar), headers={**tenant.headers, **probe})
           .json()["session"]["session_id"] for _ in range(2)}
    for sid in ids:
        api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
    assert len(ids) == 1, "the app no longer honours Idempotency-Key"

    transport = DropFirstResponse()
    slept = []
    with AvatarsClient(base_url=api.base_url, api_key=tenant.api_key, sleep=slept.append,
                       http_client=httpx.Client(transport=transport, timeout=60)) as client:
        made = client.create_session(avatar, room=livekit_room())
        assert transport.dropped == 1 and len(slept) == 1  # the response was lost once, and retried
        active = [s.session_id for s in client.iter_sessions(status="active")]
        assert active == [made.session.session_id]  # one session, not two
        client.end_session(made.session.session_id)
