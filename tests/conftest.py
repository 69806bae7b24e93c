"""Shared fixtures: one real Ray instance per test run, a real Serve app per database backend.

Backends: SQLite always; PostgreSQL when reachable (AVATAR_TEST_POSTGRES_URL). With
AVATAR_REQUIRE_POSTGRES=1 (CI) an unreachable PostgreSQL fails the run instead of skipping.
"""
from __future__ import annotations

import os
import time

import pytest

from tests.support.api import ApiUnderTest
from tests.support.databases import temporary_database
from tests.support.waiting import wait_for

HTTP_PORT = int(os.environ.get("AVATAR_TEST_HTTP_PORT", "18123"))
LOCAL_SLOTS = 16  # custom resource: several deployments with warm pools share the node
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def face_models():
    """The real face models: set-up (`make models`) must have fetched them; the failure says how."""
    from core.errors import ModelFilesMissing
    from pipelines.faces.models import model_paths

    try:
        return model_paths()
    except ModelFilesMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory):
    """A real LiveKit server: CI's (LIVEKIT_* set by .ci/run) or one this run starts and stops."""
    from tests.support.livekit import from_environment, own_server

    server = from_environment()
    if server is not None:
        yield server
        return
    with own_server(tmp_path_factory.mktemp("livekit")) as server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray node for the whole run (Ray costs seconds and ~1.3 GB to start)."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, resources={"avatar_slot": LOCAL_SLOTS}, include_dashboard=False,
             namespace="avatars-tests", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT})
    yield ray
    serve.shutdown()
    ray.shutdown()


def make_settings(tmp_path, backend: str, database_url: str, **overrides):
    from core.settings import Settings

    values = dict(
        data_dir=tmp_path, database_url=database_url, ray_namespace=f"avatars-test-{backend}-{time.time_ns()}",
        http_port=HTTP_PORT, warm_pool_size=2, placement_timeout_s=3.0, sweep_interval_s=1.0,
        heartbeat_interval_s=0.5, worker_dead_after_s=10.0, rate_limit_per_minute=100_000,
        worker_stop_timeout_s=2.0,
        worker_media="none",  # control-plane tests: workers join no room (media has its own tests)
    )
    values.update(overrides)
    return Settings(**values)


def deploy(ray_cluster, settings, name: str) -> ApiUnderTest:
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(settings.model_dump()), name=name, route_prefix=f"/{name}", blocking=False)
    api = ApiUnderTest(backend=name, settings=settings, base_url=f"http://127.0.0.1:{HTTP_PORT}/{name}")

    def healthy() -> bool:
        try:
            return api.http.get("/healthz").status_code == 200
        except Exception:  # noqa: BLE001 - not routed yet
            return False

    # the app and its scheduler (reconciled, pool filling) are up
    wait_for(healthy, 120, 0.2, f"the {name} app answering /healthz")
    scheduler_ping(settings)
    return api


def scheduler_ping(settings):
    import ray

    from actors import names

    handle = ray.get_actor(names.SCHEDULER, namespace=settings.ray_namespace)
    return ray.get(handle.ping.remote(), timeout=60)


def teardown(settings, name: str) -> None:
    import ray
    from ray import serve

    from actors import names

    try:
        handle = ray.get_actor(names.SCHEDULER, namespace=settings.ray_namespace)
        ray.get(handle.shutdown.remote(), timeout=60)
        ray.kill(handle, no_restart=True)
    except ValueError:
        pass
    for singleton in (names.RATE_LIMITER, names.WEBHOOKS):
        try:
            ray.kill(ray.get_actor(singleton, namespace=settings.ray_namespace), no_restart=True)
        except ValueError:
            pass
    serve.delete(name)


@pytest.fixture(scope="session", params=BACKENDS)
def api(request, ray_cluster, tmp_path_factory):
    """The API deployed on Serve against a fresh database of each backend."""
    backend = request.param
    folder = tmp_path_factory.mktemp(f"api-{backend}")
    with temporary_database(backend, folder) as url:
        settings = make_settings(folder, backend, url)
        app = deploy(ray_cluster, settings, f"api-{backend}")
        yield app
        teardown(settings, f"api-{backend}")
        app.store.db.dispose()


@pytest.fixture
def special_api(ray_cluster, tmp_path):
    """Deploy an extra app with overridden settings (SQLite) and tear it down afterwards."""
    made = []

    def make(name: str, **overrides):
        stack = temporary_database("sqlite", tmp_path)
        url = stack.__enter__()
        settings = make_settings(tmp_path, name, url, **overrides)
        app = deploy(ray_cluster, settings, name)
        made.append((settings, name, stack, app))
        return app

    yield make
    for settings, name, stack, app in made:
        teardown(settings, name)
        app.store.db.dispose()
        stack.__exit__(None, None, None)


@pytest.fixture(scope="module")
def media_api(ray_cluster, tmp_path_factory):
    """The API with real media: workers render, the preview platform is on (SQLite)."""
    folder = tmp_path_factory.mktemp("api-media")
    with temporary_database("sqlite", folder) as url:
        settings = make_settings(folder, "api-media", url, worker_media="rooms", enable_preview_platform=True,
                                 warm_pool_size=1, placement_timeout_s=10.0, worker_start_timeout_s=120.0,
                                 render_fps=25, preview_fps=12.0)
        app = deploy(ray_cluster, settings, "api-media")
        yield app
        teardown(settings, "api-media")
        app.store.db.dispose()
