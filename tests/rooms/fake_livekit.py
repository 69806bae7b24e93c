"""An in-process fake of the part of ``livekit.rtc.Room`` the avatar protocol uses.

A :class:`FakeServer` holds rooms; each :class:`FakeRoom` is one participant's connection. Joining
takes a real LiveKit access token (minted with ``livekit.api.AccessToken``) which the server verifies
and reads the identity, kind, name and attributes from — the same token a real server would get.

Supported surface (what livekit-agents' ``DataStreamAudioOutput`` / ``DataStreamAudioReceiver`` /
``AvatarRunner`` and our ``LiveKitRoom`` call): ``connect``/``disconnect``/``isconnected``,
``remote_participants``, ``local_participant`` (identity, kind, attributes, ``register_rpc_method``,
``perform_rpc``, ``stream_bytes``, ``publish_data``, ``publish_track``), ``register_byte_stream_handler``,
and the events ``participant_connected``/``participant_active``/``participant_disconnected``,
``connection_state_changed``, ``disconnected``, ``reconnecting``/``reconnected``, ``data_received``.
Media tracks are real ``rtc.LocalAudioTrack``/``LocalVideoTrack`` objects (their sources are real, so
``AVSynchronizer``'s pacing is real); the server only records their publication.

Every RPC and data packet is logged on the server (:attr:`FakeServer.rpc_log`, :attr:`FakeServer.data_log`)
so tests count what crossed the wire, not what a client-side event emitter chose to re-emit.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from livekit import api, rtc

API_KEY = "fake-key"
API_SECRET = "fake-secret-that-is-long-enough-for-hs256"
URL = "ws://fake-livekit.invalid"

_KINDS = {
    "": rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    "standard": rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    "agent": rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
    "egress": rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS,
    "ingress": rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS,
    "sip": rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
}


def mint_token(identity: str, room: str, *, kind: str = "standard", attributes: dict[str, str] | None = None,
               key: str = API_KEY, secret: str = API_SECRET) -> str:
    tok = api.AccessToken(key, secret).with_identity(identity).with_kind(kind)
    if attributes:
        tok = tok.with_attributes(attributes)
    return tok.with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True,
                                           can_subscribe=True, can_publish_data=True)).to_jwt()


@dataclass
class RpcRecord:
    caller: str
    destination: str
    method: str
    payload: str
    response: str | None
    error: str | None
    at: float


@dataclass
class DataRecord:
    sender: str
    topic: str
    payload: bytes
    at: float


@dataclass
class StreamRecord:
    sender: str
    destinations: list[str]
    topic: str
    attributes: dict[str, str]
    nbytes: int = 0
    closed: bool = False


class FakeServer:
    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, FakeRoom]] = {}
        self.rpc_log: list[RpcRecord] = []
        self.data_log: list[DataRecord] = []
        self.stream_log: list[StreamRecord] = []
        self.verifier = api.TokenVerifier(API_KEY, API_SECRET)

    def room_factory(self) -> FakeRoom:
        return FakeRoom(self)

    def rpcs(self, method: str) -> list[RpcRecord]:
        return [r for r in self.rpc_log if r.method == method]

    def states(self, sender: str | None = None) -> list[dict]:
        import json

        return [json.loads(d.payload) for d in self.data_log
                if d.topic == "session.state" and (sender is None or d.sender == sender)]

    # -------------------------------------------------------------- membership
    def join(self, room: FakeRoom, room_name: str) -> None:
        members = self.rooms.setdefault(room_name, {})
        if room.local_participant.identity in members:
            raise rtc.ConnectError("duplicate identity")
        for other in members.values():
            room._add_remote(other.local_participant)
        members[room.local_participant.identity] = room
        for other in list(members.values()):
            if other is not room:
                other._remote_joined(room.local_participant)

    def leave(self, room: FakeRoom) -> None:
        members = self.rooms.get(room.name, {})
        if members.get(room.local_participant.identity) is room:
            del members[room.local_participant.identity]
        for other in list(members.values()):
            other._remote_left(room.local_participant.identity)

    def kick(self, identity: str, room_name: str,
             reason: int = rtc.DisconnectReason.PARTICIPANT_REMOVED) -> None:
        room = self.rooms.get(room_name, {}).get(identity)
        if room is not None:
            room._server_disconnect(reason)

    def member(self, room_name: str, identity: str) -> FakeRoom | None:
        return self.rooms.get(room_name, {}).get(identity)

    # -------------------------------------------------------------- routing
    async def rpc(self, caller: FakeRoom, destination: str, method: str, payload: str,
                  response_timeout: float) -> str:
        target = self.member(caller.name, destination)
        rec = RpcRecord(caller.local_participant.identity, destination, method, payload, None, None, time.monotonic())
        self.rpc_log.append(rec)
        await asyncio.sleep(0)  # delivery is asynchronous, as on the wire
        if target is None:
            rec.error = "RECIPIENT_NOT_FOUND"
            raise rtc.RpcError._built_in(rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND)
        handler = target.local_participant._rpc_handlers.get(method)
        if handler is None:
            rec.error = "UNSUPPORTED_METHOD"
            raise rtc.RpcError._built_in(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD)
        data = rtc.RpcInvocationData(request_id=uuid.uuid4().hex, caller_identity=caller.local_participant.identity,
                                     payload=payload, response_timeout=response_timeout, method=method)
        try:
            result = handler(data)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, response_timeout)
        except rtc.RpcError as e:
            rec.error = str(e.code)
            raise
        except Exception as e:
            rec.error = f"APPLICATION_ERROR: {e}"
            raise rtc.RpcError._built_in(rtc.RpcError.ErrorCode.APPLICATION_ERROR) from e
        rec.response = result if isinstance(result, str) else ("" if result is None else str(result))
        return rec.response

    def open_stream(self, sender: FakeRoom, info: rtc.ByteStreamInfo, destinations: list[str]) -> FakeByteStreamWriter:
        rec = StreamRecord(sender.local_participant.identity, list(destinations), info.topic, dict(info.attributes or {}))
        self.stream_log.append(rec)
        members = self.rooms.get(sender.name, {})
        targets = [r for ident, r in members.items()
                   if ident != sender.local_participant.identity and (not destinations or ident in destinations)]
        readers = []
        for t in targets:
            handler = t._byte_stream_handlers.get(info.topic)
            if handler is not None:
                reader = FakeByteStreamReader(info)
                readers.append(reader)
                asyncio.get_running_loop().call_soon(handler, reader, sender.local_participant.identity)
        return FakeByteStreamWriter(info, readers, rec)

    def publish_data(self, sender: FakeRoom, payload: bytes, topic: str, destinations: list[str]) -> None:
        self.data_log.append(DataRecord(sender.local_participant.identity, topic, payload, time.monotonic()))
        for ident, r in list(self.rooms.get(sender.name, {}).items()):
            if ident != sender.local_participant.identity and (not destinations or ident in destinations):
                p = r.remote_participants.get(sender.local_participant.identity)
                r.emit("data_received", FakeDataPacket(payload, topic, p))


@dataclass
class FakeDataPacket:
    data: bytes
    topic: str
    participant: Any
    kind: int = 0


class FakeByteStreamReader:
    """Async iterator of chunks, like ``rtc.ByteStreamReader``."""

    def __init__(self, info: rtc.ByteStreamInfo) -> None:
        self._info = info
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    @property
    def info(self) -> rtc.ByteStreamInfo:
        return self._info

    def __aiter__(self) -> FakeByteStreamReader:
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return item


class FakeByteStreamWriter:
    CHUNK = 15_000  # LiveKit's data stream chunk size

    def __init__(self, info: rtc.ByteStreamInfo, readers: list[FakeByteStreamReader], rec: StreamRecord) -> None:
        self._info = info
        self._readers = readers
        self._rec = rec

    @property
    def info(self) -> rtc.ByteStreamInfo:
        return self._info

    async def write(self, data: bytes) -> None:
        if self._rec.closed:
            raise rtc.StreamError("stream closed")
        self._rec.nbytes += len(data)
        for i in range(0, len(data), self.CHUNK):
            for r in self._readers:
                r._queue.put_nowait(bytes(data[i : i + self.CHUNK]))
        await asyncio.sleep(0)  # let the readers run, as a write on the wire would

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        if not self._rec.closed:
            self._rec.closed = True
            for r in self._readers:
                r._queue.put_nowait(None)


@dataclass
class FakePublication:
    track: Any
    options: Any
    sid: str = field(default_factory=lambda: "TR_" + uuid.uuid4().hex[:10])

    async def wait_for_subscription(self) -> None:
        return None


class FakeParticipant:
    def __init__(self, identity: str, kind: int, attributes: dict[str, str], name: str = "") -> None:
        self.identity = identity
        self.kind = kind
        self.attributes = dict(attributes)
        self.name = name
        self.sid = "PA_" + uuid.uuid4().hex[:10]
        self.metadata = ""
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.track_publications: dict[str, Any] = {}


class FakeLocalParticipant(FakeParticipant):
    def __init__(self, room: FakeRoom, identity: str, kind: int, attributes: dict[str, str], name: str = "") -> None:
        super().__init__(identity, kind, attributes, name)
        self._room = room
        self._rpc_handlers: dict[str, Any] = {}
        self.published: list[FakePublication] = []

    def register_rpc_method(self, method_name: str, handler: Any = None) -> Any:
        def register(fn: Any) -> Any:
            self._rpc_handlers[method_name] = fn
            return fn

        return register(handler) if handler is not None else register

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc_handlers.pop(method, None)

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str,
                          response_timeout: float | None = None, max_round_trip_latency: float | None = None) -> str:
        self._room._require_connected()
        return await self._room._server.rpc(self._room, destination_identity, method, payload,
                                            response_timeout or 15.0)

    async def stream_bytes(self, name: str, *, total_size: int | None = None,
                           mime_type: str = "application/octet-stream", attributes: dict[str, str] | None = None,
                           stream_id: str | None = None, destination_identities: list[str] | None = None,
                           topic: str = "") -> FakeByteStreamWriter:
        self._room._require_connected()
        info = rtc.ByteStreamInfo(stream_id=stream_id or uuid.uuid4().hex, mime_type=mime_type, topic=topic,
                                  timestamp=int(time.time() * 1000), size=total_size,
                                  attributes=dict(attributes or {}), name=name)
        return self._room._server.open_stream(self._room, info, list(destination_identities or []))

    async def publish_data(self, payload: bytes | str, *, reliable: bool = True,
                           destination_identities: list[str] = [], topic: str = "") -> None:  # noqa: B006 (rtc's signature)
        self._room._require_connected()
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._room._server.publish_data(self._room, data, topic, list(destination_identities))

    async def publish_track(self, track: Any, options: Any = None) -> FakePublication:
        self._room._require_connected()
        pub = FakePublication(track, options)
        self.published.append(pub)
        self.track_publications[pub.sid] = pub
        return pub

    async def unpublish_track(self, track_sid: str) -> None:
        self.track_publications.pop(track_sid, None)


class FakeRoom(rtc.EventEmitter):
    _ids = itertools.count(1)

    def __init__(self, server: FakeServer) -> None:
        super().__init__()
        self._server = server
        self.name = ""
        self._connected = False
        self.connection_state = rtc.ConnectionState.CONN_DISCONNECTED
        self.local_participant = FakeLocalParticipant(self, f"unjoined-{next(self._ids)}",
                                                      rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, {})
        self._remote: dict[str, FakeParticipant] = {}
        self._byte_stream_handlers: dict[str, Any] = {}

    # -------------------------------------------------------------- rtc.Room surface
    @property
    def remote_participants(self) -> dict[str, FakeParticipant]:
        return self._remote

    def isconnected(self) -> bool:
        return self._connected

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        if url != URL:
            raise rtc.ConnectError(f"cannot reach {url}")
        try:
            claims = self._server.verifier.verify(token)
        except Exception as e:
            raise rtc.ConnectError(f"invalid token: {e}") from e
        await asyncio.sleep(0.01)  # a join takes a moment, as on the wire
        lp = self.local_participant
        lp.identity = claims.identity
        lp.kind = _KINDS.get((claims.kind or "").lower(), rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD)
        lp.attributes = dict(claims.attributes or {})
        lp.name = claims.name or ""
        self.name = claims.video.room
        self._server.join(self, self.name)
        self._connected = True
        self._set_state(rtc.ConnectionState.CONN_CONNECTED)

    async def disconnect(self, *, reason: int = rtc.DisconnectReason.CLIENT_INITIATED) -> None:
        self._leave(reason)

    def _leave(self, reason: int) -> None:
        if not self._connected:
            return
        self._server.leave(self)
        self._connected = False
        self._remote.clear()
        self._set_state(rtc.ConnectionState.CONN_DISCONNECTED)
        self.emit("disconnected", reason)

    def register_byte_stream_handler(self, topic: str, handler: Any) -> None:
        if topic in self._byte_stream_handlers:
            raise ValueError(f"byte stream handler for topic '{topic}' already set")
        self._byte_stream_handlers[topic] = handler

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self._byte_stream_handlers.pop(topic, None)

    # -------------------------------------------------------------- test controls
    def simulate_connection_loss(self) -> None:
        """The transport dropped: the SDK says ``reconnecting`` and keeps trying."""
        self._set_state(rtc.ConnectionState.CONN_RECONNECTING)
        self.emit("reconnecting")

    def simulate_reconnected(self) -> None:
        self._set_state(rtc.ConnectionState.CONN_CONNECTED)
        self.emit("reconnected")

    # -------------------------------------------------------------- server side
    def _require_connected(self) -> None:
        if not self._connected:
            raise RuntimeError("room is not connected")

    def _set_state(self, state: int) -> None:
        self.connection_state = state
        self.emit("connection_state_changed", state)

    def _add_remote(self, lp: FakeLocalParticipant) -> FakeParticipant:
        p = FakeParticipant(lp.identity, lp.kind, lp.attributes, lp.name)
        self._remote[p.identity] = p
        return p

    def _remote_joined(self, lp: FakeLocalParticipant) -> None:
        p = self._add_remote(lp)
        self.emit("participant_connected", p)
        self.emit("participant_active", p)

    def _remote_left(self, identity: str) -> None:
        p = self._remote.pop(identity, None)
        if p is not None:
            self.emit("participant_disconnected", p)

    def _server_disconnect(self, reason: int) -> None:
        self._leave(reason)
