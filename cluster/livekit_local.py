"""A LiveKit server for development and tests, built from its Go module and run on loopback only.

``python -m cluster.livekit_local build``  builds ``livekit-server`` at the pinned version once and caches
                                           the binary (a second run builds nothing);
``python -m cluster.livekit_local start``  starts it with a generated config and key, prints the
                                           ``LIVEKIT_*`` variables (``--env-file`` writes them too);
``python -m cluster.livekit_local stop``   stops the server it started, by the pid it recorded.

Nothing leaves the machine: signalling binds 127.0.0.1; there is no ICE-TCP listener and no external-IP
discovery, and the only STUN server handed to the server and its clients is a loopback address.
Media (ICE over UDP) cannot use 127.0.0.1 itself: libwebrtc, the engine of the LiveKit client SDKs and of
browsers, ignores loopback interfaces and drops packets that come from a loopback address, so a server
whose only candidate is 127.0.0.1 never connects (measured: the client answers none of the server's
checks). The server's one RTC address is therefore ``RTC_ADDRESS`` on ``RTC_INTERFACE``, a veth pair
this module creates (root) whose address is local to the machine: the kernel delivers traffic to it
through ``lo`` (``ip route get 198.18.0.1`` → ``local``), so it never reaches a wire. 198.18.0.0/15 is the
range reserved for network benchmarks (RFC 2544), used by nothing else here.

Why not ``go install ...@version``: the newest releases carry ``replace`` directives to forks of pion
that the Go module proxy does not serve, so ``go install`` refuses them. ``LIVEKIT_VERSION`` is the newest
release without such directives; it is built inside its downloaded module (a normal main-module build).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.livekit_tokens import TokenKind

LIVEKIT_MODULE = "github.com/livekit/livekit-server"
LIVEKIT_VERSION = "v1.13.5"
CACHE_DIR = Path(os.environ.get("AVATAR_LIVEKIT_CACHE", Path.home() / ".cache" / "ray-avatars"))
BUILD_TIMEOUT_S = 1500
START_TIMEOUT_S = 30
RTC_INTERFACE = "avatars-rtc"  # one end of the veth pair that holds RTC_ADDRESS
RTC_ADDRESS = "198.18.0.1"


class LiveKitUnavailable(RuntimeError):
    """The server could not be built or started; the message says what to run."""


def binary_path() -> Path:
    return CACHE_DIR / f"livekit-server-{LIVEKIT_VERSION}"


def build(*, quiet: bool = False) -> Path:
    """The cached server binary, built from the Go module at ``LIVEKIT_VERSION`` if not there yet."""
    target = binary_path()
    if target.exists():
        return target
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise LiveKitUnavailable("Go is needed to build the LiveKit server (it is on the project's machines)")
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    out = subprocess.run([go, "mod", "download", "-json", f"{LIVEKIT_MODULE}@{LIVEKIT_VERSION}"], env=env,
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if out.returncode != 0:
        raise LiveKitUnavailable(f"go mod download {LIVEKIT_MODULE}@{LIVEKIT_VERSION} failed: {out.stderr[-2000:]}")
    module_dir = json.loads(out.stdout)["Dir"]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    if not quiet:
        print(f"building livekit-server {LIVEKIT_VERSION} (once; cached in {target.parent})", file=sys.stderr)
    built = subprocess.run([go, "build", "-trimpath", "-o", str(partial), "./cmd/server"], cwd=module_dir, env=env,
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if built.returncode != 0:
        raise LiveKitUnavailable(f"building livekit-server failed: {built.stderr[-3000:]}")
    partial.replace(target)
    return target


def ensure_rtc_interface() -> str:
    """The machine-local address the server's media binds to; creates the veth pair once (root)."""
    shown = subprocess.run(["ip", "-4", "-br", "addr", "show", "dev", RTC_INTERFACE], capture_output=True, text=True)
    if shown.returncode == 0 and RTC_ADDRESS in shown.stdout and "UP" in shown.stdout:
        return RTC_ADDRESS
    peer = f"{RTC_INTERFACE}-p"
    steps = [["ip", "link", "add", RTC_INTERFACE, "type", "veth", "peer", "name", peer]] if shown.returncode else []
    steps += [["ip", "addr", "replace", f"{RTC_ADDRESS}/32", "dev", RTC_INTERFACE],
              ["ip", "link", "set", RTC_INTERFACE, "up"], ["ip", "link", "set", peer, "up"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise LiveKitUnavailable(f"could not set up the RTC interface ({' '.join(step)}: {done.stderr.strip()}); "
                                     "it needs root (CAP_NET_ADMIN), as on the project's machines")
    return RTC_ADDRESS


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LiveKitServer:
    """A running local server: where it listens, its key pair, and the process that owns it."""

    url: str
    api_key: str
    api_secret: str
    port: int
    rtc_port: int
    pid: int
    workdir: str

    def env(self) -> dict[str, str]:
        return {"LIVEKIT_URL": self.url, "LIVEKIT_API_KEY": self.api_key, "LIVEKIT_API_SECRET": self.api_secret}

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def dev_token(server: LiveKitServer, identity: str, room: str, *, kind: TokenKind = "standard",
              attributes: dict[str, str] | None = None, ttl_s: int = 24 * 3600) -> str:
    """A join token for one room of a local server (see ``core.livekit_tokens``)."""
    from datetime import timedelta

    from core.livekit_tokens import join_token

    return join_token(server.api_key, server.api_secret, room=room, identity=identity, kind=kind,
                      attributes=attributes, ttl=timedelta(seconds=ttl_s))


def config_yaml(port: int, rtc_port: int, api_key: str, api_secret: str, rtc_address: str = RTC_ADDRESS) -> str:
    """Signalling on 127.0.0.1, media on the machine-local RTC address only; nothing discovered."""
    return f"""\
port: {port}
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: 0  # no ICE-TCP: its listener would bind every interface
  udp_port: {rtc_port}
  use_external_ip: false
  node_ip: {rtc_address}
  stun_servers: ["127.0.0.1:{rtc_port}"]  # never the public default STUN servers
  interfaces:
    includes: ["{RTC_INTERFACE}"]
  ips:
    includes: ["{rtc_address}/32"]
room:
  auto_create: true
  empty_timeout: 60
keys:
  {api_key}: {api_secret}
logging:
  level: warn
"""


def start(workdir: Path, *, port: int | None = None, rtc_port: int | None = None,
          api_key: str | None = None, api_secret: str | None = None) -> LiveKitServer:
    """Start a server (building it first if needed) and wait until it answers; bounded."""
    binary = build(quiet=True)
    rtc_address = ensure_rtc_interface()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rtc_port = rtc_port or free_port(socket.SOCK_DGRAM, rtc_address)
    api_key = api_key or f"APIdev{secrets.token_hex(4)}"
    api_secret = api_secret or secrets.token_urlsafe(32)
    config = workdir / "livekit.yaml"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the secret
    with os.fdopen(fd, "w") as fh:
        fh.write(config_yaml(port, rtc_port, api_key, api_secret, rtc_address))
    log = open(workdir / "livekit.log", "ab")
    proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    server = LiveKitServer(url=f"ws://127.0.0.1:{port}", api_key=api_key, api_secret=api_secret, port=port,
                           rtc_port=rtc_port, pid=proc.pid, workdir=str(workdir))
    (workdir / "livekit.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LiveKitUnavailable(f"livekit-server exited with {proc.returncode}; see {workdir / 'livekit.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    stop(server)
    raise LiveKitUnavailable(f"livekit-server did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S}s")


def stop(server: LiveKitServer | int, timeout: float = 10.0) -> None:
    """Stop the server by its pid (TERM, then KILL after ``timeout``). Never touches other processes."""
    pid = server if isinstance(server, int) else server.pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child (stopped from another process): poll for it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.livekit_local", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build and cache the server binary (idempotent)")
    p_start = sub.add_parser("start", help="start a loopback-only server and print its LIVEKIT_* variables")
    p_start.add_argument("--dir", default=".data/livekit", help="folder for its config, log and pid")
    p_start.add_argument("--port", type=int, default=None, help="signalling port (default: a free one)")
    p_start.add_argument("--env-file", default=None, help="also write the variables here (shell 'export' lines)")
    p_stop = sub.add_parser("stop", help="stop the server started with the same --dir")
    p_stop.add_argument("--dir", default=".data/livekit")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            print(build())
        elif args.cmd == "start":
            server = start(Path(args.dir).resolve(), port=args.port)
            (Path(args.dir) / "server.json").write_text(json.dumps(asdict(server)))
            lines = [f"export {k}={v}" for k, v in server.env().items()]
            if args.env_file:
                fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write("\n".join(lines) + "\n")
            print("\n".join(lines))
        else:
            pid_file = Path(args.dir) / "livekit.pid"
            if pid_file.exists():
                stop(int(pid_file.read_text()))
                pid_file.unlink()
    except LiveKitUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
