"""``avatarctl``: the operator's command line.

Admin commands talk to the database directly (``AVATAR_DATABASE_URL`` or the embedded default);
``run`` starts the whole platform locally on embedded defaults.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading

from core import errors
from core.settings import Settings


def _store(settings: Settings):
    from core.db.engine import Database
    from core.db.migrate import upgrade
    from core.db.store import Store

    settings.require_database_folder()  # only `db upgrade` and `run` create a data folder
    upgrade(settings.database_url)
    return Store(Database(settings.database_url))


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ====================================================================== admin commands
def cmd_db_upgrade(args, settings: Settings) -> None:
    from core.db.migrate import upgrade

    upgrade(settings.database_url)
    print(f"database at head: {_redact(settings.database_url)}")


def cmd_accounts_create(args, settings: Settings) -> None:
    store = _store(settings)
    account = store.accounts.create_account(args.name, args.plan)
    out = {"account_id": account.id, "name": account.name, "plan": account.plan_key}
    if not args.no_key:
        key, plaintext = store.accounts.create_api_key(account.id, "initial")
        out.update(api_key=plaintext, api_key_id=key.id, note="the key is shown once; store it now")
    _print(out)


def cmd_accounts_list(args, settings: Settings) -> None:
    store = _store(settings)
    _print([{"account_id": a.id, "name": a.name, "plan": a.plan_key, "created_at": a.created_at,
             "overrides": {k: getattr(a, k) for k in ("max_concurrent_sessions", "max_session_seconds",
                                                      "included_minutes", "avatar_uploads",
                                                      "rate_limit_per_minute")
                           if getattr(a, k) is not None}} for a in store.accounts.list_accounts()])


def cmd_accounts_set_plan(args, settings: Settings) -> None:
    overrides = {}
    if args.max_concurrent is not None:
        overrides["max_concurrent_sessions"] = args.max_concurrent
    if args.max_session_minutes is not None:
        overrides["max_session_seconds"] = args.max_session_minutes * 60
    if args.included_minutes is not None:
        overrides["included_minutes"] = args.included_minutes
    if args.avatar_uploads is not None:
        overrides["avatar_uploads"] = args.avatar_uploads
    if args.rate_limit is not None:
        overrides["rate_limit_per_minute"] = args.rate_limit
    account = _store(settings).accounts.set_plan(args.account_id, args.plan, **overrides)
    _print({"account_id": account.id, "plan": account.plan_key, **overrides})


def cmd_minutes_add(args, settings: Settings) -> None:
    pack = _store(settings).sessions.add_minutes(args.account_id, args.minutes, args.note)
    _print({"pack_id": pack.id, "account_id": pack.account_id, "minutes": pack.minutes})


def cmd_keys_create(args, settings: Settings) -> None:
    key, plaintext = _store(settings).accounts.create_api_key(args.account_id, args.label, live=not args.test)
    _print({"api_key_id": key.id, "api_key": plaintext, "note": "the key is shown once; store it now"})


def cmd_keys_list(args, settings: Settings) -> None:
    _print([{"api_key_id": k.id, "prefix": k.display_prefix, "label": k.label, "created_at": k.created_at,
             "revoked_at": k.revoked_at} for k in _store(settings).accounts.list_api_keys(args.account_id)])


def cmd_keys_revoke(args, settings: Settings) -> None:
    key = _store(settings).accounts.revoke_api_key(args.key_id)
    _print({"api_key_id": key.id, "revoked_at": key.revoked_at})


def cmd_plans_list(args, settings: Settings) -> None:
    _print([{"key": p.key, "name": p.name, "max_concurrent_sessions": p.max_concurrent_sessions,
             "max_session_minutes": p.max_session_seconds // 60, "included_minutes": p.included_minutes,
             "avatar_uploads": p.avatar_uploads, "allows_url_avatars": p.allows_url_avatars,
             "rate_limit_per_minute": p.rate_limit_per_minute}
            for p in _store(settings).plans.list_plans()])


def cmd_plans_set(args, settings: Settings) -> None:
    values = {k: v for k, v in (("max_concurrent_sessions", args.max_concurrent),
                                ("included_minutes", args.included_minutes),
                                ("avatar_uploads", args.avatar_uploads),
                                ("rate_limit_per_minute", args.rate_limit)) if v is not None}
    if args.max_session_minutes is not None:
        values["max_session_seconds"] = args.max_session_minutes * 60
    plan = _store(settings).plans.update_plan(args.plan, **values)
    _print({"key": plan.key, **values})


# ====================================================================== run: the whole platform, locally
DEV_ACCOUNT = "development"


def dev_api_key(settings: Settings) -> str:
    """The development account's key: created once, kept in <data_dir>/dev_api_key (mode 0600)."""
    store = _store(settings)
    path = settings.data_dir / "dev_api_key"
    account = store.accounts.find_account_by_name(DEV_ACCOUNT)
    if account is None:
        account = store.accounts.create_account(DEV_ACCOUNT, "growth")
    if path.exists():
        plaintext = path.read_text().strip()
        try:
            if store.accounts.authenticate(plaintext).account_id == account.id:
                return plaintext
        except errors.AuthError:
            pass
    _, plaintext = store.accounts.create_api_key(account.id, "development (make run)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(plaintext)
    return plaintext


def cmd_run(args, settings: Settings) -> None:
    import ray
    from ray import serve

    from actors import names
    from actors.clients import SchedulerClient
    from serve_app.app import build_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.resolved_secret_key()
    key = dev_api_key(settings)  # also migrates the database
    seeded = seed_public_avatars(settings)

    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=settings.ray_namespace, include_dashboard=False)
    else:
        ray.init(address="local", resources={settings.slot_resource: settings.local_slots},
                 namespace=settings.ray_namespace, include_dashboard=False)
    livekit = local_livekit(settings)  # before the app is built: the proxy platform uses it
    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    serve.run(build_app(settings.model_dump(mode="json")), name="avatars", route_prefix="/", blocking=False)

    print(run_banner(settings, key, seeded), flush=True)
    if livekit is not None:
        print(livekit_lines(livekit, key, settings.base_url, seeded[0][1] if seeded else "avat_..."), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("\nstopping: ending sessions, removing workers and groups ...", flush=True)
    try:
        scheduler = SchedulerClient(ray.get_actor(names.SCHEDULER, namespace=settings.ray_namespace))
        ended = asyncio.run(scheduler.shutdown(timeout=60))
        print(f"ended {ended} session(s)")
        ray.kill(scheduler.handle, no_restart=True)
        ray.kill(ray.get_actor(names.RATE_LIMITER, namespace=settings.ray_namespace), no_restart=True)
        ray.kill(ray.get_actor(names.WEBHOOKS, namespace=settings.ray_namespace), no_restart=True)
    except Exception as exc:  # still shut down what we started
        print(f"scheduler shutdown: {type(exc).__name__}: {exc}")
    serve.shutdown()
    ray.shutdown()
    if livekit is not None:
        from cluster import livekit_local

        livekit_local.stop(livekit)


def local_livekit(settings: Settings):
    """A local LiveKit server for the `proxy` platform and your own tests, unless one is configured."""
    if settings.livekit_url:
        return None
    from cluster import livekit_local

    if not livekit_local.binary_path().exists():
        print("note: no local LiveKit server (build it once: python -m cluster.livekit_local build)", file=sys.stderr)
        return None
    try:
        server = livekit_local.start(settings.data_dir / "livekit")
    except livekit_local.LiveKitUnavailable as exc:
        print(f"note: no local LiveKit server: {exc}", file=sys.stderr)
        return None
    settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret = (
        server.url, server.api_key, server.api_secret)
    return server


def livekit_lines(server, key: str, base: str, avatar: str) -> str:
    """How to use the local LiveKit server: a proxy session, and a room `demo` with tokens minted for it."""
    from cluster.livekit_local import RTC_ADDRESS, dev_token

    viewer = dev_token(server, "viewer", "demo")
    avatar_token = dev_token(server, "demo-avatar-agent", "demo", kind="agent",
                             attributes={"lk.publish_on_behalf": "viewer"})
    return f"""
Local LiveKit server: {server.url} (signalling on 127.0.0.1, media on the machine-local {RTC_ADDRESS})
  # a session in a room the platform provides (the response has session.room.roomURL / participantToken):
  curl -s -X POST {base}/v1/sessions -H 'x-api-key: {key}' -H 'content-type: application/json' \\
    -d '{{"avatar": "{avatar}", "aspect_ratio": "auto", "room": {{"platform": "proxy"}}}}'
  # or the avatar in room "demo", driven by the participant "viewer" (tokens valid 24 h):
  curl -s -X POST {base}/v1/sessions -H 'x-api-key: {key}' -H 'content-type: application/json' \\
    -d '{{"avatar": "{avatar}", "room": {{"platform": "livekit", "url": "{server.url}", "token": "{avatar_token}"}}}}'
  viewer token for room demo: {viewer}"""


def run_banner(settings: Settings, key: str, seeded: list[tuple[str, str]]) -> str:
    """What `avatarctl run` prints once the platform is up: where, the key, the named public avatars,
    and a create that works as printed."""
    base = settings.base_url
    avatar = seeded[0][1] if seeded else "avat_..."
    room = ('{"platform": "preview"}' if settings.enable_preview_platform
            else '{"platform": "livekit", "url": "wss://your.livekit.host", "token": "<avatar token>"}')
    avatars = "\n".join(f"  {name:<14} {aid}" for name, aid in seeded) or "  none (face models missing: run make models)"
    return f"""
Avatar platform running at {base}  (docs: {base}/docs, playground: {base}/playground)
Development account API key: {key}   (also in {settings.data_dir / 'dev_api_key'})
Public avatars:
{avatars}

  curl -s -X POST {base}/v1/sessions -H 'x-api-key: {key}' -H 'content-type: application/json' \\
    -d '{{"avatar": "{avatar}", "room": {room}}}'
  curl -s {base}/v1/usage -H 'x-api-key: {key}'
  # in your own LiveKit room: "room": {{"platform": "livekit", "url": "wss://...", "token": "<avatar token>"}}
  # (README.md: walk-through, WebSocket, LiveKit rooms)

Ctrl-C stops everything this command started: running sessions end (cluster_restart), billed for the
minutes they ran."""


def seed_public_avatars(settings: Settings) -> list[tuple[str, str]]:
    """(name, avatar id) of the public avatars made from the real sample photos (none until the face
    pipeline is installed)."""
    try:
        from pipelines.faces.seed import seed_public_avatars as seed
    except ImportError:
        return []
    try:
        ids = seed(settings)
    except errors.ModelFilesMissing as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return []
    store = _store(settings)
    return [(store.avatars.get_avatar(a).name, a) for a in ids]


# ====================================================================== faces: batch import as a Ray job
def cmd_faces_batch(args, settings: Settings) -> None:
    """Submit ``python -m pipelines.faces.batch`` as a Ray job (``--address``) or run it in this process."""
    from pipelines.faces import batch

    argv = batch.import_argv(args)
    if not args.address:
        code = batch.main(argv)
        if code:
            raise SystemExit(code)
        return
    import shlex

    from ray.job_submission import JobSubmissionClient, JobStatus

    # The job's driver reaches the same database and blob store as this command.
    env = {"AVATAR_DATABASE_URL": settings.database_url, "AVATAR_STORAGE_URL": settings.storage_url}
    if os.environ.get("AVATAR_MODEL_DIR"):
        env["AVATAR_MODEL_DIR"] = os.environ["AVATAR_MODEL_DIR"]
    runtime_env: dict = {"env_vars": env}
    if args.working_dir:
        runtime_env["working_dir"] = args.working_dir
    client = JobSubmissionClient(args.address)
    if "--no-progress" not in argv:
        argv.append("--no-progress")
    entrypoint = "python -m pipelines.faces.batch " + " ".join(shlex.quote(a) for a in argv)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    print(f"submitted Ray job {job_id}: {entrypoint}", file=sys.stderr)
    if not args.wait:
        _print({"job_id": job_id, "entrypoint": entrypoint})
        return
    import time

    while True:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(2)
    logs = client.get_job_logs(job_id).strip().splitlines()
    print(logs[-1] if logs else "{}")
    if status != JobStatus.SUCCEEDED:
        raise SystemExit(f"job {job_id} {status.value}")


# ====================================================================== webhooks
def _webhooks(settings: Settings):
    from core.db.webhook_store import WebhookStore

    return WebhookStore(_store(settings).db)


def cmd_webhooks_create(args, settings: Settings) -> None:
    from core.db.webhook_store import endpoint_view
    from pipelines.faces.url_fetch import check_webhook_url

    check_webhook_url(args.url, allow_loopback=settings.allow_loopback_webhook_urls)
    row = _webhooks(settings).create_endpoint(args.account_id, args.url, args.event or [], args.description)
    _print({**endpoint_view(row), "secret": row.secret, "note": "the secret is shown once; store it now"})


def cmd_webhooks_list(args, settings: Settings) -> None:
    from core.db.webhook_store import endpoint_view

    _print([endpoint_view(r) for r in _webhooks(settings).list_endpoints(args.account_id)])


def cmd_webhooks_delete(args, settings: Settings) -> None:
    row = _webhooks(settings).delete_endpoint(args.webhook_id)
    _print({"webhook_id": row.id, "deleted": True})


def cmd_webhooks_deliveries(args, settings: Settings) -> None:
    _print(_webhooks(settings).list_deliveries(args.webhook_id, limit=args.limit))


def cmd_webhooks_retry(args, settings: Settings) -> None:
    _print(_webhooks(settings).retry_delivery(args.webhook_id, args.delivery_id))


# ====================================================================== parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatarctl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the platform locally (Ray, Serve, SQLite, local storage)").set_defaults(
        func=cmd_run)

    db = sub.add_parser("db", help="database").add_subparsers(dest="sub", required=True)
    db.add_parser("upgrade", help="migrate to the latest schema").set_defaults(func=cmd_db_upgrade)

    acc = sub.add_parser("accounts", help="accounts").add_subparsers(dest="sub", required=True)
    c = acc.add_parser("create", help="create an account (and its first API key)")
    c.add_argument("--name", required=True)
    c.add_argument("--plan", default="free", choices=["free", "explorer", "growth", "pro", "enterprise"])
    c.add_argument("--no-key", action="store_true", help="do not create an API key")
    c.set_defaults(func=cmd_accounts_create)
    acc.add_parser("list").set_defaults(func=cmd_accounts_list)
    sp = acc.add_parser("set-plan", help="change plan and per-account limits")
    sp.add_argument("account_id")
    sp.add_argument("plan")
    for flag in ("--max-concurrent", "--max-session-minutes", "--included-minutes", "--avatar-uploads"):
        sp.add_argument(flag, type=int)
    sp.add_argument("--rate-limit", type=int, help="requests per minute per API key (overrides the plan's)")
    sp.set_defaults(func=cmd_accounts_set_plan)

    mins = sub.add_parser("minutes", help="purchased minutes").add_subparsers(dest="sub", required=True)
    ma = mins.add_parser("add", help="add a purchased minute pack")
    ma.add_argument("account_id")
    ma.add_argument("minutes", type=int)
    ma.add_argument("--note", default="")
    ma.set_defaults(func=cmd_minutes_add)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="sub", required=True)
    kc = keys.add_parser("create", help="create a key (shown once)")
    kc.add_argument("account_id")
    kc.add_argument("--label", default="")
    kc.add_argument("--test", action="store_true", help="an ah_test_ key")
    kc.set_defaults(func=cmd_keys_create)
    kl = keys.add_parser("list")
    kl.add_argument("account_id")
    kl.set_defaults(func=cmd_keys_list)
    kr = keys.add_parser("revoke")
    kr.add_argument("key_id")
    kr.set_defaults(func=cmd_keys_revoke)

    render = sub.add_parser("render", help="render an avatar speaking a WAV to MP4, or a contact sheet "
                                         "(see `avatarctl render render --help`)", add_help=False)
    render.add_argument("args", nargs=argparse.REMAINDER)
    render.set_defaults(func=lambda args, settings: _render(args.args))

    plans = sub.add_parser("plans", help="plans").add_subparsers(dest="sub", required=True)
    plans.add_parser("list").set_defaults(func=cmd_plans_list)

    faces = sub.add_parser("faces", help="face uploads").add_subparsers(dest="sub", required=True)
    fb = faces.add_parser("batch", help="bulk-import a folder/glob of images (Ray Data job; no HTTP calls)")
    from pipelines.faces.batch import add_import_arguments

    add_import_arguments(fb)
    fb.add_argument("--address", help="Ray dashboard/job address (http://head:8265): submit as a Ray job; "
                                      "omitted: run in this process")
    fb.add_argument("--working-dir", help="runtime_env working_dir for the job (default: the cluster's install)")
    fb.add_argument("--wait", action="store_true", help="with --address: wait and print the job's JSON summary")
    fb.set_defaults(func=cmd_faces_batch)
    from ctl import livekit, say

    livekit.add_parser(sub)
    say.add_parser(sub)
    hooks = sub.add_parser("webhooks", help="webhook endpoints").add_subparsers(dest="sub", required=True)
    wc = hooks.add_parser("create", help="add an endpoint to an account (the secret is shown once)")
    wc.add_argument("account_id")
    wc.add_argument("url")
    wc.add_argument("--event", action="append", help="an event type to receive (repeatable; default: all)")
    wc.add_argument("--description", default="")
    wc.set_defaults(func=cmd_webhooks_create)
    wl = hooks.add_parser("list", help="an account's endpoints")
    wl.add_argument("account_id")
    wl.set_defaults(func=cmd_webhooks_list)
    wd = hooks.add_parser("delete")
    wd.add_argument("webhook_id")
    wd.set_defaults(func=cmd_webhooks_delete)
    wv = hooks.add_parser("deliveries", help="an endpoint's deliveries, newest first")
    wv.add_argument("webhook_id")
    wv.add_argument("--limit", type=int, default=50)
    wv.set_defaults(func=cmd_webhooks_deliveries)
    wr = hooks.add_parser("retry", help="send a delivery again now (re-enables a disabled endpoint)")
    wr.add_argument("webhook_id")
    wr.add_argument("delivery_id")
    wr.set_defaults(func=cmd_webhooks_retry)

    ps = plans.add_parser("set", help="change a plan's defaults")
    ps.add_argument("plan")
    for flag in ("--max-concurrent", "--max-session-minutes", "--included-minutes", "--avatar-uploads"):
        ps.add_argument(flag, type=int)
    ps.add_argument("--rate-limit", type=int, help="requests per minute per API key on this plan")
    ps.set_defaults(func=cmd_plans_set)
    return p


def _render(argv: list[str]) -> None:
    from media.renderer.cli import main as render_main

    code = render_main(argv)
    if code:
        raise SystemExit(code)


def _redact(url: str) -> str:
    """A database URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    from sqlalchemy.exc import OperationalError

    try:
        args.func(args, settings)
    except errors.ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except errors.DataDirMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:  # unreadable file, unreachable server: say which database and why
        print(f"error: cannot use the database {_redact(settings.database_url)} (data folder "
              f"{settings.data_dir}, AVATAR_DATA_DIR / AVATAR_DATABASE_URL): {exc.orig}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
