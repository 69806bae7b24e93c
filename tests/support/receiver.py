"""A real local HTTP receiver for webhook tests: records every request by path, and can be told to be
down (503), to hang, to answer with a huge body or to redirect."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.waiting import wait_for


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # path prefixes answering 503
    slow_once: dict[str, float] = field(default_factory=dict)  # path prefix → seconds to sleep, first hit only
    hangs_open: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def at(self, prefix: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def wait_for(self, prefix: str, count: int, timeout: float = 90.0) -> list[Received]:
        return wait_for(lambda: len(got := self.at(prefix)) >= count and got, timeout, 0.05,
                        f"{count} requests to {prefix}")


def start_receiver() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            rec = holder["r"]
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            path = self.path
            if path.startswith("/hang"):
                with rec.lock:
                    rec.hangs_open += 1
                rec.release.wait(60)
                with rec.lock:
                    rec.hangs_open -= 1
                return
            if path.startswith("/redirect"):
                target = "http://10.0.0.1/private" if "private" in path else f"{rec.base}/redirect-target"
                self.send_response(307)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with rec.lock:
                rec.requests.append(Received(path, {k.lower(): v for k, v in self.headers.items()}, body,
                                             time.monotonic()))
                slow = next((p for p in rec.slow_once if path.startswith(p)), None)
                delay = rec.slow_once.pop(slow) if slow else 0.0
                down = any(path.startswith(p) for p in rec.down)
            if delay:
                time.sleep(delay)  # the behaviour asked for: a slow endpoint
            if path.startswith("/huge"):
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                try:
                    for _ in range(1 << 14):  # at most 1 GB, stops when the client hangs up
                        self.wfile.write(b"x" * 65536)
                except OSError:
                    pass
                return
            self.send_response(503 if down else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = Receiver(server)
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return holder["r"]
