"""GCS fault tolerance on Redis: the head restarts, running sessions survive, the API recovers.

A real two-node Ray cluster on this machine (`ray start --block`, as cluster/start_local_cluster.sh
does): a head whose GCS keeps its tables in Redis (127.0.0.1:6379, `RAY_REDIS_ADDRESS`, a namespace of
its own) and one worker node with session slots. The platform (Serve app, scheduler) is deployed and two
sessions are started through the HTTP API; then the whole head node is killed (SIGKILL to its process
group: GCS, raylet, Serve controller and proxy) and started again on the same port within the worker
raylet's reconnect window (60 s). The session workers on the worker node must keep running (same
process ids), the API must answer again (Serve restores the app from the GCS), the sessions must still
be `started` and can be ended. Skipped when Redis does not answer.

The drivers run in child processes (`python -m tests.test_gcs_ft <phase> <state.json>`), since a
driver does not outlive the GCS it is connected to.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from actors.names import HEAD_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
REDIS = ("127.0.0.1", 6379)


def _redis_ping() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FtCluster:
    """A head with GCS FT on Redis plus one worker node, each a `ray start --block` process group."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.temp_dir = folder / "ray"
        self.temp_dir.mkdir(parents=True)
        self.port = _free_port()
        self.namespace = f"avatars-gcsft-{uuid.uuid4().hex[:12]}"
        token = folder / "auth_token"
        token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
        token.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AVATAR_"))}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
                        RAY_REDIS_ADDRESS=f"{REDIS[0]}:{REDIS[1]}", RAY_external_storage_namespace=self.namespace)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ray = str(Path(sys.executable).with_name("ray"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.folder / f"{name}.out").open("a")
        self.procs[name] = subprocess.Popen(
            [self.ray, "start", "--block", "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
             "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={_free_port()}", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start_head(self) -> None:
        # `ray start --head` refuses to start where ray_current_cluster names a GCS address that a live
        # process still uses (the worker raylet's --gcs-address): the restarted head must not see it.
        (self.temp_dir / "ray_current_cluster").unlink(missing_ok=True)
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=1", "--num-gpus=0",
                             "--include-dashboard=false", f"--ray-client-server-port={_free_port()}"])

    def start_worker(self) -> None:
        self._start("worker", [f"--address={self.address}", "--num-cpus=1", '--resources={"avatar_slot": 4}'])

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def driver(self, phase: str, state: Path, timeout: float = 180) -> dict:
        env = dict(self.env, RAY_ADDRESS=self.address)
        env.pop("RAY_REDIS_ADDRESS")
        proc = subprocess.run([sys.executable, "-m", "tests.test_gcs_ft", phase, str(state)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{phase}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def shutdown(self) -> None:
        import psutil

        below = _descendants([p.pid for p in self.procs.values()])
        for name in list(self.procs):
            self.kill(name)
        # Ray worker processes lead their own process groups: most exit with their raylet, the rest are killed
        _, alive = psutil.wait_procs(below, timeout=1)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        _redis_delete_namespace(self.namespace)


def _descendants(pids: list[int]) -> list:
    import psutil

    out = []
    for pid in pids:
        try:
            out += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return out


def _redis_delete_namespace(namespace: str) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        return
    keys = subprocess.run([cli, "-h", REDIS[0], "-p", str(REDIS[1]), "--scan", "--pattern", f"RAY{namespace}@*"],
                          capture_output=True, text=True, timeout=30).stdout.split()
    if keys:
        subprocess.run([cli, "-h", REDIS[0], "-p", str(REDIS[1]), "del", *keys], capture_output=True, timeout=30)


@pytest.mark.skipif(not _redis_ping() and os.environ.get("AVATAR_REQUIRE_REDIS") != "1",
                    reason="no Redis on 127.0.0.1:6379 (CI requires it: AVATAR_REQUIRE_REDIS=1)")
@pytest.mark.timeout(420)
def test_head_restart_with_gcs_ft_keeps_sessions_and_the_api_recovers():
    folder = Path(tempfile.mkdtemp(prefix="avft-", dir="/tmp"))  # short: Unix socket paths live below it
    cluster = FtCluster(folder)
    state = folder / "state.json"
    state.write_text(json.dumps({"folder": str(folder), "http_port": _free_port()}))
    try:
        cluster.start_head()
        cluster.start_worker()
        before = cluster.driver("deploy", state)
        assert len(before["workers"]) == 2 and all(s == "started" for s in before["statuses"])

        cluster.kill("head")
        killed_at = time.monotonic()
        cluster.start_head()
        after = cluster.driver("after_restart", state)
        assert time.monotonic() - killed_at < 60, "the worker raylet only waits 60 s for its GCS"

        assert after["new_head"] != before["head"]
        assert after["workers"] == before["workers"]  # the same processes: the sessions never stopped
        assert after["statuses"] == ["started", "started"]
        assert after["healthz"] == {"ok": True}
        assert after["ended"] == ["ended", "user_requested"] and after["other"] == "started"
    finally:
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


# ====================================================================== the drivers (child processes)
def _wait(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: BLE001 - still recovering
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(interval)


def _settings(state: dict):
    from core.settings import Settings

    folder = Path(state["folder"])
    values = dict(data_dir=folder / "data", http_port=state["http_port"], ray_namespace="avatars-gcsft",
                  warm_pool_size=0, placement_timeout_s=20.0, sweep_interval_s=1.0, heartbeat_interval_s=1.0,
                  worker_dead_after_s=120.0, worker_stop_timeout_s=2.0, rate_limit_per_minute=100_000)
    if "worker_media" in Settings.model_fields:
        values["worker_media"] = "none"
    return Settings(**values)


def _workers(settings, session_ids: list[str]) -> list[int]:
    import ray

    from core import ids

    return [ray.get(ray.get_actor(ids.worker_name(s), namespace=settings.ray_namespace).info.remote(), timeout=30)["pid"]
            for s in session_ids]


def _phase_deploy(state_path: Path) -> dict:
    import httpx
    import ray
    from ray import serve

    from core import ids
    from core.clock import utcnow
    from core.db.engine import Database
    from core.db.models import Avatar
    from core.db.store import Store
    from serve_app.app import build_app

    state = json.loads(state_path.read_text())
    ray.init(log_to_driver=False, namespace="gcsft-driver")
    _wait(lambda: sum(1 for n in ray.nodes() if n["Alive"]) == 2, 60)
    settings = _settings(state)
    serve.start(http_options={"host": "127.0.0.1", "port": state["http_port"], "location": "HeadOnly"})
    serve.run(build_app(settings.model_dump(mode="json")), name="avatars", route_prefix="/", blocking=False)
    store = Store(Database(settings.database_url))
    acct = store.accounts.create_account("gcsft", "enterprise")
    _, key = store.accounts.create_api_key(acct.id, "gcsft")
    avatar = Avatar(id=ids.new_id(ids.AVATAR), is_public=True, name="x", created_at=utcnow())
    store.avatars.add_avatar(avatar)
    http = httpx.Client(base_url=f"http://127.0.0.1:{state['http_port']}", timeout=60, headers={"x-api-key": key})
    _wait(lambda: http.get("/healthz").status_code == 200, 90)
    body = {"avatar": avatar.id, "room": {"platform": "livekit", "url": "wss://lk.example", "token": "t"}}
    sessions = []
    for _ in range(2):
        r = http.post("/v1/sessions", json=body)
        assert r.status_code == 201, r.text
        sessions.append(r.json()["session"]["session_id"])
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and HEAD_RESOURCE in n["Resources"])
    state.update(key=key, sessions=sessions, head=head)
    state_path.write_text(json.dumps(state))
    return {"head": head, "sessions": sessions, "workers": _workers(settings, sessions),
            "statuses": [http.get(f"/v1/sessions/{s}").json()["session"]["status"] for s in sessions]}


def _phase_after_restart(state_path: Path) -> dict:
    import httpx
    import ray

    state = json.loads(state_path.read_text())
    settings = _settings(state)
    ray.init(log_to_driver=False, namespace="gcsft-driver")
    new_head = _wait(lambda: next((n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != state["head"]
                                   and HEAD_RESOURCE in n["Resources"]), None), 60)
    workers = _workers(settings, state["sessions"])
    http = httpx.Client(base_url=f"http://127.0.0.1:{state['http_port']}", timeout=60,
                        headers={"x-api-key": state["key"]})
    healthz = _wait(lambda: (r := http.get("/healthz")).status_code == 200 and r.json(), 120)
    statuses = [http.get(f"/v1/sessions/{s}").json()["session"]["status"] for s in state["sessions"]]
    ended = _wait(lambda: (r := http.post(f"/v1/sessions/{state['sessions'][0]}/end")).status_code == 200
                  and r.json()["session"], 60)
    other = http.get(f"/v1/sessions/{state['sessions'][1]}").json()["session"]["status"]
    return {"new_head": new_head, "workers": workers, "statuses": statuses, "healthz": healthz,
            "ended": [ended["status"], ended["end_reason"]], "other": other}


if __name__ == "__main__":
    phase, path = sys.argv[1], Path(sys.argv[2])
    result = {"deploy": _phase_deploy, "after_restart": _phase_after_restart}[phase](path)
    print(json.dumps(result))
