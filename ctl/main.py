"""``avatarctl``: the operator's command line.

Admin commands talk to the database directly (``AVATAR_DATABASE_URL`` or the embedded default);
``run`` starts the whole platform locally on embedded defaults.
"""
from __future__ import annotations

import argparse
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
    account = store.create_account(args.name, args.plan)
    out = {"account_id": account.id, "name": account.name, "plan": account.plan_key}
    if not args.no_key:
        key, plaintext = store.create_api_key(account.id, "initial")
        out.update(api_key=plaintext, api_key_id=key.id, note="the key is shown once; store it now")
    _print(out)


def cmd_accounts_list(args, settings: Settings) -> None:
    store = _store(settings)
    _print([{"account_id": a.id, "name": a.name, "plan": a.plan_key, "created_at": a.created_at,
             "overrides": {k: getattr(a, k) for k in ("max_concurrent_sessions", "max_session_seconds",
                                                      "included_minutes", "avatar_uploads",
                                                      "rate_limit_per_minute")
                           if getattr(a, k) is not None}} for a in store.list_accounts()])


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
    account = _store(settings).set_plan(args.account_id, args.plan, **overrides)
    _print({"account_id": account.id, "plan": account.plan_key, **overrides})


def cmd_minutes_add(args, settings: Settings) -> None:
    pack = _store(settings).add_minutes(args.account_id, args.minutes, args.note)
    _print({"pack_id": pack.id, "account_id": pack.account_id, "minutes": pack.minutes})


def cmd_keys_create(args, settings: Settings) -> None:
    key, plaintext = _store(settings).create_api_key(args.account_id, args.label, live=not args.test)
    _print({"api_key_id": key.id, "api_key": plaintext, "note": "the key is shown once; store it now"})


def cmd_keys_list(args, settings: Settings) -> None:
    _print([{"api_key_id": k.id, "prefix": k.display_prefix, "label": k.label, "created_at": k.created_at,
             "revoked_at": k.revoked_at} for k in _store(settings).list_api_keys(args.account_id)])


def cmd_keys_revoke(args, settings: Settings) -> None:
    key = _store(settings).revoke_api_key(args.key_id)
    _print({"api_key_id": key.id, "revoked_at": key.revoked_at})


def cmd_plans_list(args, settings: Settings) -> None:
    _print([{"key": p.key, "name": p.name, "max_concurrent_sessions": p.max_concurrent_sessions,
             "max_session_minutes": p.max_session_seconds // 60, "included_minutes": p.included_minutes,
             "avatar_uploads": p.avatar_uploads, "allows_url_avatars": p.allows_url_avatars,
             "rate_limit_per_minute": p.rate_limit_per_minute}
            for p in _store(settings).list_plans()])


def cmd_plans_set(args, settings: Settings) -> None:
    values = {k: v for k, v in (("max_concurrent_sessions", args.max_concurrent),
                                ("included_minutes", args.included_minutes),
                                ("avatar_uploads", args.avatar_uploads),
                                ("rate_limit_per_minute", args.rate_limit)) if v is not None}
    if args.max_session_minutes is not None:
        values["max_session_seconds"] = args.max_session_minutes * 60
    plan = _store(settings).update_plan(args.plan, **values)
    _print({"key": plan.key, **values})


# ====================================================================== run: the whole platform, locally
DEV_ACCOUNT = "development"


def dev_api_key(settings: Settings) -> str:
    """The development account's key: created once, kept in <data_dir>/dev_api_key (mode 0600)."""
    store = _store(settings)
    path = settings.data_dir / "dev_api_key"
    account = store.find_account_by_name(DEV_ACCOUNT)
    if account is None:
        account = store.create_account(DEV_ACCOUNT, "growth")
    if path.exists():
        plaintext = path.read_text().strip()
        try:
            if store.authenticate(plaintext).account_id == account.id:
                return plaintext
        except errors.AuthError:
            pass
    _, plaintext = store.create_api_key(account.id, "development (make run)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(plaintext)
    return plaintext


def cmd_run(args, settings: Settings) -> None:
    import ray
    from ray import serve

    from actors import names
    from serve_app.app import build_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.resolved_secret_key()
    key = dev_api_key(settings)  # also migrates the database
    seeded = seed_public_avatars(settings)

    init = dict(namespace=settings.ray_namespace, include_dashboard=False)
    if settings.ray_address:
        ray.init(address=settings.ray_address, **init)
    else:
        ray.init(address="local", resources={settings.slot_resource: settings.local_slots}, **init)
    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    serve.run(build_app(settings.model_dump(mode="json")), name="avatars", route_prefix="/", blocking=False)

    base = settings.base_url
    avatar = seeded[0] if seeded else "avat_..."
    room = ('{"platform": "preview"}' if settings.enable_preview_platform
            else '{"platform": "livekit", "url": "wss://your.livekit.host", "token": "<avatar token>"}')
    print(f"""
Avatar platform running at {base}  (docs: {base}/docs, playground: {base}/playground)
Development account API key: {key}
Public avatars: {', '.join(seeded) or 'none (face models missing: run make models)'}

  curl -s -X POST {base}/v1/sessions -H 'x-api-key: {key}' -H 'content-type: application/json' \\
    -d '{{"avatar": "{avatar}", "room": {room}}}'
  curl -s {base}/v1/usage -H 'x-api-key: {key}'
  # in your own LiveKit room: "room": {{"platform": "livekit", "url": "wss://...", "token": "<avatar token>"}}

Ctrl-C stops everything this command started.""", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("\nstopping: ending sessions, removing workers and groups ...", flush=True)
    try:
        scheduler = ray.get_actor(names.SCHEDULER, namespace=settings.ray_namespace)
        ended = ray.get(scheduler.shutdown.remote(), timeout=60)
        print(f"ended {ended} session(s)")
        ray.kill(scheduler, no_restart=True)
        ray.kill(ray.get_actor(names.RATE_LIMITER, namespace=settings.ray_namespace), no_restart=True)
    except Exception as exc:  # still shut down what we started
        print(f"scheduler shutdown: {type(exc).__name__}: {exc}")
    serve.shutdown()
    ray.shutdown()


def seed_public_avatars(settings: Settings) -> list[str]:
    """Public avatars from the real sample photos (a no-op until the face pipeline is installed)."""
    try:
        from pipelines.faces.seed import seed_public_avatars as seed
    except ImportError:
        return []
    try:
        return seed(settings)
    except errors.ModelFilesMissing as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return []


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
    ps = plans.add_parser("set", help="change a plan's defaults")
    ps.add_argument("plan")
    for flag in ("--max-concurrent", "--max-session-minutes", "--included-minutes", "--avatar-uploads"):
        ps.add_argument(flag, type=int)
    ps.add_argument("--rate-limit", type=int, help="requests per minute per API key on this plan")
    ps.set_defaults(func=cmd_plans_set)
    return p


def _render(argv: list[str]) -> None:
    from actors.renderer.cli import main as render_main

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
    try:
        args.func(args, settings)
    except errors.ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
