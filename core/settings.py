"""The one typed configuration object.

Every field is documented and can be set from the environment as ``AVATAR_<FIELD>`` (nested fields with
``__``), from a ``.env`` file, or passed explicitly (the Serve application builder and the tests do).
Defaults are the embedded development setup: local Ray, a SQLite file and a storage folder under
``data_dir``.
"""
from __future__ import annotations

import difflib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import errors

if TYPE_CHECKING:
    from core.policy.webhooks import RetryPolicy


class Settings(BaseSettings):
    # unknown fields are refused (a mistyped Serve argument must not be silently dropped); unknown
    # AVATAR_* environment variables are not fields and are not read at all
    model_config = SettingsConfigDict(env_prefix="AVATAR_", env_nested_delimiter="__", extra="forbid",
                                      hide_input_in_errors=True)  # errors never echo secrets

    # ------------------------------------------------------------------ storage and database
    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="Folder for everything the embedded defaults keep: SQLite file, blobs, models, secret. "
        "Unset: .data in the source checkout the code runs from (whatever the current folder), or "
        "$XDG_DATA_HOME/avatars (~/.local/share/avatars) for an install without a checkout. A relative "
        "value is taken relative to the current folder.",
    )
    # Derived from data_dir when unset: the factories see the fields validated before them.
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['data_dir'] / 'avatars.db'}",
        description="SQLAlchemy URL. Unset: sqlite:///<data_dir>/avatars.db. PostgreSQL: "
        "postgresql+psycopg://user@host:5432/dbname.",
    )
    storage_url: str = Field(
        default_factory=lambda data: (data["data_dir"] / "blobs").as_uri(),
        description="fsspec URL of the blob store root (file:///..., gs://bucket/prefix). Unset: <data_dir>/blobs.",
    )
    model_dir: Path = Field(
        default_factory=lambda data: data["data_dir"] / "models",
        description="Cache of the face model files fetched at set-up. Unset: <data_dir>/models.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs preview/image URLs and derives encryption keys. Unset: generated once and kept "
        "in <data_dir>/secret_key (set it explicitly when several machines serve the API).",
    )

    # ------------------------------------------------------------------ HTTP API
    http_host: str = Field(default="127.0.0.1", description="Address Serve's HTTP proxy binds to.")
    http_port: int = Field(default=8000, description="Port of Serve's HTTP proxy.")
    api_replicas: int = Field(default=1, ge=1, description="Serve replicas of the FastAPI ingress.")
    rate_limit_per_minute: int = Field(default=60, ge=1, description="Default requests per minute per API key (a plan, or an account through avatarctl, may set its own).")
    rate_limit_lease_fraction: float = Field(
        default=0.05, ge=0, le=1,
        description="Share of a key's per-minute limit a replica leases from the rate-limit actor at once (spent "
        "locally, so requests make no actor call until it is used up). Never admits more than the limit across "
        "replicas; a replica may leave up to one lease unspent at the window's end. 0: one actor call per request.")
    rate_limit_lease_max: int = Field(
        default=100, ge=1, description="Largest lease (requests) a replica takes at once, whatever the limit.")
    admin_token: str | None = Field(
        default=None, description="Token for the operator endpoints under /v1/admin (header x-admin-token). Unset: they are off."
    )
    auth_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a replica trusts a checked API key (a revoked key works at most this long)."
    )
    public_base_url: str | None = Field(
        default=None, description="Base URL clients use to reach the API (for signed URLs). Unset: http://host:port."
    )
    signed_url_ttl_s: int = Field(default=3600, ge=1, description="Lifetime of signed image/preview URLs.")
    metadata_max_bytes: int = Field(default=16 * 1024, description="Cap on a session's metadata JSON.")
    allow_loopback_image_urls: bool = Field(
        default=False,
        description="Let upload-face image_url / URL avatars fetch from loopback addresses (127.0.0.0/8, ::1). "
        "For local development and tests only; every other non-public range stays refused. Off by default.",
    )
    enable_preview_platform: bool = Field(
        default=False, description="Allow room platform 'preview' (no room; video via the preview endpoint). Dev only."
    )

    # ------------------------------------------------------------------ the deployment's LiveKit server (room platform "proxy")
    livekit_url: str | None = Field(
        default=None,
        description="LiveKit server on which the platform provides rooms for room platform 'proxy' (ws:// or wss://, "
        "as clients reach it). Unset: 'proxy' is refused. `avatarctl run` sets it to the local server it starts.",
    )
    livekit_api_key: str | None = Field(default=None, description="API key of that LiveKit server.")
    livekit_api_secret: str | None = Field(default=None, repr=False, description="API secret of that LiveKit server.")
    proxy_avatar_identity: str = Field(
        default="agenthuman-avatar-agent", description="Identity the avatar worker joins 'proxy' rooms with."
    )
    proxy_caller_identity: str = Field(
        default="agent", description="Identity in the caller's participantToken; the avatar takes speech from it."
    )
    livekit_api_timeout_s: float = Field(default=10.0, gt=0, description="Bound on each LiveKit server API call.")

    # ------------------------------------------------------------------ webhooks
    webhook_poll_interval_s: float = Field(
        default=0.1, gt=0, description="How often the delivery actor looks at the outbox for due deliveries."
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Bound on one delivery attempt: DNS, connect, TLS, send, status line."
    )
    webhook_max_concurrency: int = Field(default=32, ge=1, description="Deliveries in flight at once, all endpoints.")
    webhook_max_per_endpoint: int = Field(
        default=8, ge=1, description="Deliveries in flight at once to one endpoint (a slow one cannot take them all)."
    )
    webhook_retry_base_s: float = Field(default=5.0, gt=0, description="First retry delay; doubles per attempt.")
    webhook_retry_cap_s: float = Field(default=3600.0, gt=0, description="Longest delay between two attempts.")
    webhook_retry_window_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long a delivery is retried after its event (at least 24 h in production)."
    )
    webhook_disable_after: int = Field(
        default=100, ge=1, description="Consecutive failed attempts after which an endpoint is disabled."
    )
    allow_loopback_webhook_urls: bool = Field(
        default=False,
        description="Tests and local development only: webhook URLs may be http:// and reach loopback addresses. "
        "Off: https only, public addresses only (the image-URL rules).",
    )

    # ------------------------------------------------------------------ Ray
    ray_address: str | None = Field(
        default=None, description="Address of an existing Ray cluster ('auto', 'ray://...'). Unset: start a local one."
    )
    ray_namespace: str = Field(default="avatars", description="Ray namespace of every named actor and group.")
    local_slots: int = Field(
        default=4, ge=0, description="Session slots a local (embedded) Ray node advertises as the slot resource."
    )

    # ------------------------------------------------------------------ placement of session workers
    slot_resource: str = Field(
        default="avatar_slot",
        description="Custom resource one session takes on CPU-only nodes. Used when gpu_per_session is 0.",
    )
    gpu_per_session: float = Field(
        default=0.0, ge=0.0, le=1.0, description="GPU fraction per session on GPU nodes (0.25 = four per GPU); 0 = use slot_resource."
    )
    cpu_per_session: float = Field(default=0.0, ge=0.0, description="CPUs reserved in each session's bundle.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="How sessions are placed across nodes: PACK fills the busiest node with room first, SPREAD the emptiest."
    )
    placement_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a create waits for a slot before 503 CAPACITY_UNAVAILABLE."
    )
    warm_pool_size: int = Field(default=2, ge=0, description="Pre-started workers kept ready for new sessions.")
    worker_start_timeout_s: float = Field(default=30.0, gt=0, description="Bound on a worker's start (join) call.")
    worker_stop_timeout_s: float = Field(default=5.0, gt=0, description="Bound on a graceful stop before the kill.")

    # ------------------------------------------------------------------ media in the session worker
    worker_media: Literal["rooms", "none"] = Field(
        default="rooms",
        description="rooms: workers join the session's room and render the avatar. none: workers join no "
        "room and render nothing (control-plane tests and scheduler load tests).",
    )
    render_device: str = Field(default="auto", description="Torch device of the renderer: auto (cuda if present), cpu, cuda, cuda:N.")
    render_fps: int = Field(
        default=25, ge=1, le=60,
        description="Video frames per second of a session that does not ask for its own (`video.fps`), on every platform.")
    render_sample_rate: int = Field(default=48000, description="Audio sample rate the worker publishes, on every platform.")
    video_max_side: int = Field(
        default=1280, ge=64, description="Largest width or height a session may ask for in the create body's `video`."
    )
    video_max_fps: int = Field(default=30, ge=1, le=60, description="Highest frame rate a session may ask for in `video`.")
    preview_fps: float = Field(default=12.0, gt=0, description="Frame rate cap of the MJPEG preview stream.")
    preview_token_ttl_s: int = Field(default=600, ge=1, description="Lifetime of a session's preview token.")
    max_buffered_speech_s: float = Field(
        default=30.0, gt=0, description="Unplayed speech a session accepts before its input waits (the WebSocket "
        "applies backpressure, a LiveKit agent's audio stream waits) or, from a Daily participant, is dropped."
    )
    media_av_queue_frames: int = Field(
        default=3, ge=1, description="Frames (picture + its audio) queued for a LiveKit session's publisher before "
        "the render loop waits for it (backpressure: speech waits instead of being dropped)."
    )
    media_av_stall_limit_s: float = Field(
        default=10.0, gt=0, description="How long one stalled publisher may hold its render loop back; after it "
        "its oldest frames are dropped (counted) so one stuck room cannot freeze the others in its batch."
    )
    livekit_av_queue_ms: int = Field(
        default=60, ge=10, description="Depth of the LiveKit audio and picture queues (AVSynchronizer): bounds how "
        "far sound can trail the picture after a stall (60 ms keeps it inside the -100 ms lip-sync tolerance)."
    )
    daily_speech_sample_rate: int = Field(
        default=16000, ge=8000, description="Rate at which a Daily room's audio participant's microphone is read."
    )
    daily_silence_end_s: float = Field(
        default=0.6, gt=0, description="Silence that ends an utterance of a Daily room's audio participant."
    )

    # ------------------------------------------------------------------ lifecycle
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="How often a worker writes its heartbeat.")
    worker_dead_after_s: float = Field(
        default=30.0, gt=0, description="A session whose heartbeat is older than this is ended as worker_failed."
    )
    sweep_interval_s: float = Field(default=5.0, gt=0, description="Period of the sweeper and expiry checks.")
    room_empty_grace_s: float = Field(default=30.0, ge=0, description="Grace before an empty room ends a session.")
    room_connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Bound on a worker's first join of the session's LiveKit or Daily room "
        "(slower: the create fails with ROOM_CONNECT_FAILED); inside worker_start_timeout_s."
    )
    room_reconnect_timeout_s: float = Field(
        default=20.0, gt=0, description="A room connection lost and not regained within this ends the session "
        "as connection_lost (the SDKs retry by themselves meanwhile)."
    )
    idle_timeout_s: float = Field(
        default=0.0, ge=0, description="End a session (idle_timeout) after this long without speech; 0 = off."
    )

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: object) -> object:
        if isinstance(data, dict):
            unknown = sorted(k for k in data if isinstance(k, str) and k not in cls.model_fields)
            if unknown:
                hints = []
                for k in unknown:
                    close = difflib.get_close_matches(k, list(cls.model_fields), n=1)
                    hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ValueError("unknown setting " + ", ".join(hints))
        return data

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        """Constraints between fields; each message names the fields."""
        problems = []
        if self.heartbeat_interval_s >= self.worker_dead_after_s:
            problems.append("heartbeat_interval_s must be shorter than worker_dead_after_s (a live worker "
                            "would be declared dead between two heartbeats)")
        if self.sweep_interval_s >= self.worker_dead_after_s:
            problems.append("sweep_interval_s must be shorter than worker_dead_after_s (dead workers would be "
                            "found a whole sweep late)")
        if not self.webhook_retry_base_s <= self.webhook_retry_cap_s <= self.webhook_retry_window_s:
            problems.append("webhook_retry_base_s <= webhook_retry_cap_s <= webhook_retry_window_s must hold")
        if self.render_fps > self.video_max_fps:
            problems.append("render_fps (every session's default) must not exceed video_max_fps")
        if self.worker_stop_timeout_s >= self.worker_start_timeout_s + self.placement_timeout_s:
            problems.append("worker_stop_timeout_s must be shorter than the create budget "
                            "(placement_timeout_s + worker_start_timeout_s)")
        if self.room_connect_timeout_s >= self.worker_start_timeout_s:
            problems.append("room_connect_timeout_s must be shorter than worker_start_timeout_s (the join is part "
                            "of the worker's start)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ------------------------------------------------------------------ derived
    def require_database_folder(self) -> None:
        """Operator commands read an existing database: a SQLite file whose folder is missing means the
        command runs against the wrong data folder, which is refused by name (instead of quietly
        creating an empty database there)."""
        if not self.database_url.startswith("sqlite:///"):
            return
        folder = Path(self.database_url.removeprefix("sqlite:///")).parent
        if folder.is_dir():
            return
        if self.database_url == f"sqlite:///{self.data_dir / 'avatars.db'}":
            source = "AVATAR_DATA_DIR" if os.environ.get("AVATAR_DATA_DIR") else "the default: AVATAR_DATA_DIR is unset"
            raise errors.DataDirMissing(
                f"The data folder {folder} does not exist ({source}). Set AVATAR_DATA_DIR to the folder "
                "the platform uses (the one holding avatars.db), or create it with `avatarctl db upgrade` "
                "or `make run`.")
        raise errors.DataDirMissing(
            f"The folder {folder} of the SQLite database in AVATAR_DATABASE_URL does not exist. Point "
            "AVATAR_DATABASE_URL at the platform's database, or create it with `avatarctl db upgrade`.")

    @property
    def slot_bundle(self) -> dict[str, float]:
        """The resources one session's placement group bundle asks for."""
        bundle: dict[str, float] = {}
        if self.gpu_per_session > 0:
            bundle["GPU"] = self.gpu_per_session
        else:
            bundle[self.slot_resource] = 1.0
        if self.cpu_per_session > 0:
            bundle["CPU"] = self.cpu_per_session
        return bundle

    def webhook_retry_policy(self) -> RetryPolicy:
        from datetime import timedelta

        from core.policy.webhooks import RetryPolicy

        return RetryPolicy(base_s=self.webhook_retry_base_s, cap_s=self.webhook_retry_cap_s,
                           window=timedelta(seconds=self.webhook_retry_window_s),
                           disable_after=self.webhook_disable_after)

    @property
    def livekit_configured(self) -> bool:
        """The deployment has its own LiveKit server, so room platform ``proxy`` is available."""
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.http_host}:{self.http_port}"

    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated once and kept in the data folder (mode 0600)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        self.secret_key = path.read_text().strip()
        return self.secret_key


def default_data_dir() -> Path:
    """``.data`` in the source checkout this module belongs to (where ``make run`` keeps it), so every
    command finds the same database from any folder; without a checkout, the user's data folder."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return root / ".data"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "avatars"


def setting_default(name: str) -> Any:
    """A field's default, for typed options built from ``Settings`` whose own defaults must agree with it."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings from the environment (tests pass their own ``Settings`` instead)."""
    return Settings()
