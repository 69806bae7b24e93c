"""The deployment files under cluster/: parsed, complete, consistent with the settings the app reads,
and the Serve config really started with `serve run` (its own fresh Ray, in its own process group)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
BUILDER = "serve_app.app:build_app"


def load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.fixture(scope="module")
def serve_config() -> dict:
    return load("serve_config.yaml")


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return load("rayservice.yaml")


@pytest.fixture(scope="module")
def service_serve_config(rayservice) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def only_app(config: dict) -> dict:
    (app,) = config["applications"]
    return app


def settings_from(app: dict) -> Settings:
    """The args as the builder reads them, without this machine's AVATAR_* environment."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AVATAR_")}
    try:
        return Settings(**app["args"])
    finally:
        os.environ.update(saved)


# ====================================================================== the Serve config(s)
@pytest.mark.parametrize("which", ["serve_config", "service_serve_config"])
def test_serve_configs_validate_as_ray_serve_schemas_with_typed_settings_args(which, request):
    from ray.serve.schema import ServeDeploySchema

    config = request.getfixturevalue(which)
    ServeDeploySchema.model_validate(config)  # Ray's own schema of `serve run/deploy` and serveConfigV2
    app = only_app(config)
    assert app["import_path"] == BUILDER and app["route_prefix"] == "/"
    unknown = set(app["args"]) - set(Settings.model_fields)
    assert not unknown, f"args that are not Settings fields: {unknown}"
    settings = settings_from(app)
    assert settings.http_port == config["http_options"]["port"]
    assert Path(app["args"]["data_dir"]).is_absolute()  # the builder runs on the cluster, not here
    for secret in ("secret_key", "admin_token", "database_url"):
        assert secret not in app["args"], f"{secret} belongs in the nodes' environment, not in the file"


def test_import_path_resolves_to_the_application_builder(serve_config):
    from ray._common.utils import import_attr

    import serve_app.app

    assert import_attr(only_app(serve_config)["import_path"]) is serve_app.app.build_app


def test_local_serve_config_matches_the_local_cluster_script(serve_config):
    script = (CLUSTER / "start_local_cluster.sh").read_text()
    default_resource = re.search(r'SLOT_RESOURCE="\$\{SLOT_RESOURCE:-([\w-]+)\}"', script).group(1)
    settings = settings_from(only_app(serve_config))
    assert settings.slot_resource == default_resource and settings.gpu_per_session == 0  # slots, not GPUs
    assert "ray stop" not in re.sub(r"#.*", "", script)
    assert "ray stop" not in re.sub(r"#.*", "", (CLUSTER / "stop_local_cluster.sh").read_text())


def test_both_configs_run_the_same_application(serve_config, service_serve_config):
    local, cluster = only_app(serve_config), only_app(service_serve_config)
    assert (local["name"], local["import_path"]) == (cluster["name"], cluster["import_path"])
    same = {"ray_namespace", "slot_resource", "placement_strategy"}
    assert {k: local["args"][k] for k in same} == {k: cluster["args"][k] for k in same}


# ====================================================================== the RayService manifest
def test_rayservice_has_the_required_fields(rayservice):
    import ray

    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"]["mode"] == "token"
    ft = cluster["gcsFaultToleranceOptions"]
    assert re.fullmatch(r"[\w.-]+:\d+", ft["redisAddress"])
    ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "cpu"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    images = {c["image"] for spec in [cluster["headGroupSpec"], *groups.values()]
              for c in spec["template"]["spec"]["containers"]}
    assert len(images) == 1  # one image everywhere (the documented placeholder)


def test_head_runs_no_sessions_and_gpu_nodes_advertise_whole_slots(rayservice, service_serve_config):
    cluster = rayservice["spec"]["rayClusterConfig"]
    settings = settings_from(only_app(service_serve_config))
    slot_key = "GPU" if settings.gpu_per_session > 0 else settings.slot_resource

    def advertised(params: dict) -> dict[str, float]:
        out = {"GPU": float(params.get("num-gpus", 0)), "CPU": float(params.get("num-cpus", 0))}
        out.update(yaml.safe_load(params.get("resources", "{}")))
        return out

    head = advertised(cluster["headGroupSpec"]["rayStartParams"])
    assert head["GPU"] == 0 and head.get(settings.slot_resource, 0) == 0
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = advertised(groups["gpu"]["rayStartParams"])
    slots = gpu[slot_key] / settings.slot_bundle[slot_key]
    assert slots >= 1 and abs(slots - round(slots)) < 1e-9, f"{slots} session slots per GPU node"
    assert gpu["CPU"] >= round(slots) * settings.cpu_per_session  # every slot's bundle fits
    limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert float(limits["nvidia.com/gpu"]) == gpu["GPU"]
    cpu = advertised(groups["cpu"]["rayStartParams"])
    assert cpu["GPU"] == 0 and cpu.get(settings.slot_resource, 0) == 0 and cpu["CPU"] > 0
    # the warm pool fits on the GPU nodes the autoscaler keeps
    assert settings.warm_pool_size <= groups["gpu"]["minReplicas"] * round(slots)


def test_every_pod_gets_the_secrets_from_the_environment(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for spec in specs:
        (container,) = spec["template"]["spec"]["containers"]
        names = {e["name"] for e in container["env"]}
        assert {"AVATAR_DATABASE_URL", "AVATAR_SECRET_KEY", "AVATAR_ADMIN_TOKEN"} <= names
        for entry in container["env"]:
            if entry["name"] != "AVATAR_MODEL_DIR":
                assert "secretKeyRef" in entry["valueFrom"]


# ====================================================================== serve run, for real
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_run_of_the_config_file_answers_healthz(serve_config, tmp_path):
    """`serve run cluster/serve_config.yaml` on a fresh local Ray (the port and data folder moved to
    this test's own, the warm pool off since that Ray advertises no slots)."""
    serve_bin = Path(sys.executable).with_name("serve")
    if not serve_bin.exists():
        serve_bin = Path(shutil.which("serve") or "serve")
    port = free_port()
    config = yaml.safe_load(yaml.safe_dump(serve_config))
    config["http_options"]["port"] = port
    only_app(config)["args"].update(data_dir=str(tmp_path / "data"), http_port=port, warm_pool_size=0,
                                    ray_namespace="avatars-serve-run-test")
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_", "RAY_"))}
    env["RAY_ADDRESS"] = "local"  # always a fresh Ray: never join one found on this machine
    log = (tmp_path / "serve_run.log").open("w")
    proc = subprocess.Popen([str(serve_bin), "run", str(path)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if r.status_code == 200:
                    body = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert body == {"ok": True}, (tmp_path / "serve_run.log").read_text()[-4000:]
        assert (tmp_path / "data" / "avatars.db").exists()  # the builder migrated the configured database
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT (serve run removes the app and its Ray), then SIGKILL to the whole group."""
    for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group (the Ray it started)
    except ProcessLookupError:
        pass
