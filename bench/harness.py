"""A local platform for benchmarks: real Ray, real Serve, SQLite in a temporary folder."""
from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

from core import ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import Avatar
from core.db.store import Store
from core.settings import Settings


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def summary(values_ms: list[float]) -> dict[str, float]:
    return {"p50": percentile(values_ms, 50), "p99": percentile(values_ms, 99),
            "mean": round(statistics.fmean(values_ms), 2) if values_ms else float("nan")}


class Platform:
    def __init__(self, settings: Settings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.store = Store(Database(settings.database_url))
        self.http = httpx.Client(base_url=base_url, timeout=120)

    def account(self, plan: str = "enterprise", **overrides) -> dict[str, str]:
        acct = self.store.accounts.create_account("bench", plan)
        if overrides:
            self.store.accounts.set_plan(acct.id, plan, **overrides)
        _, key = self.store.accounts.create_api_key(acct.id, "bench")
        return {"x-api-key": key}

    def public_avatar(self) -> str:
        avatar = Avatar(id=ids.new_id(ids.AVATAR), is_public=True, name="bench", created_at=utcnow())
        self.store.avatars.add_avatar(avatar)
        return avatar.id

    def scheduler_stats(self) -> dict:
        import ray

        from actors import names

        scheduler: Any = ray.get_actor(names.SCHEDULER, namespace=self.settings.ray_namespace)
        return ray.get(scheduler.stats.remote(), timeout=30)

    def wait_pool(self, size: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scheduler_stats()["warm_pool"] >= size:
                return True
            time.sleep(0.02)
        return False


@contextmanager
def local_platform(port: int = 18200, slots: int = 16, **overrides) -> Iterator[Platform]:
    import ray
    from ray import serve

    from serve_app.app import build_app

    with tempfile.TemporaryDirectory(prefix="avatars-bench-") as tmp:
        values: dict[str, Any] = dict(data_dir=Path(tmp), http_port=port, ray_namespace="avatars-bench",
                      rate_limit_per_minute=1_000_000, local_slots=slots,
                      worker_media="none")
        values.update(overrides)
        settings = Settings(**values)
        ray.init(address="local", num_cpus=2, resources={settings.slot_resource: slots}, include_dashboard=False,
                 namespace="avatars-bench-driver", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(settings.model_dump(mode="json")), name="bench", route_prefix="/", blocking=False)
        platform = Platform(settings, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if platform.http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        try:
            yield platform
        finally:
            from actors import names

            try:
                sched = ray.get_actor(names.SCHEDULER, namespace=settings.ray_namespace)
                ray.get(sched.shutdown.remote(), timeout=60)
            except Exception:
                pass
            serve.shutdown()
            ray.shutdown()
