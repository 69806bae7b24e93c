"""SSRF-safe fetching of an image URL (SPEC: upload-face ``image_url``, avatar-as-URL in session create).

For every hop (the URL given and each redirect):

1. only ``http``/``https``, no credentials in the URL;
2. the host is resolved once (``getaddrinfo``, or the injected ``resolver``) and *every* resolved address
   must be public (:func:`address_refusal`): no loopback, private, link-local (cloud metadata
   169.254.169.254 included), CGNAT, multicast, reserved, unspecified, documentation or benchmarking
   ranges, nor their IPv6 forms (IPv4-mapped, 6to4, NAT64, Teredo, ULA, site-local);
3. the connection goes to the checked address itself (a network backend pinned to it: no second DNS
   lookup, so DNS rebinding cannot swap in another address), while the ``Host`` header, TLS SNI and the
   certificate check use the hostname;
4. redirects are not followed by the client: each ``Location`` goes through steps 1-3 again, at most
   ``MAX_REDIRECTS``;
5. one deadline (``timeout_s``) bounds the whole fetch: DNS, every connect, TLS handshake, read and write;
6. the body is streamed and abandoned as soon as it exceeds ``max_bytes`` (``ImageTooLarge``).

Errors: refused URL -> ``ImageUrlNotAllowed``; unresolvable, unreachable, timeout, TLS or HTTP error,
too many redirects -> ``ImageFetchFailed``; too large -> ``ImageTooLarge``.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpcore

from core.errors import ImageFetchFailed, ImageTooLarge, ImageUrlNotAllowed, WebhookUrlNotAllowed

MAX_BYTES = 10 * 1024 * 1024
TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
USER_AGENT = "ray-avatars-image-fetch/1"
_REDIRECTS = {301, 302, 303, 307, 308}

Resolver = Callable[[str, int], list[str]]

# Ranges refused on top of what ``ipaddress`` already calls non-global (belt and braces: the stdlib's
# tables have changed between Python versions).
_DENY_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    )
]  # fmt: skip
_DENY_V6 = [
    ipaddress.ip_network(n)
    for n in (
        "::/128", "::1/128", "::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
        "2001::/32", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
]  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(ip: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` may not be fetched from, or ``None`` if it is a public unicast address."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return "not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        # IPv6 spellings of IPv4 addresses are judged by the IPv4 address they carry.
        embedded = addr.ipv4_mapped or (addr.sixtofour if addr.sixtofour else None)
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is None and addr.teredo:
            return "Teredo address"
        if embedded is not None:
            reason = address_refusal(str(embedded), allow_loopback=allow_loopback)
            return f"IPv6 form of {embedded}: {reason}" if reason else "IPv6 form of an IPv4 address"
    if addr.is_loopback:
        return None if allow_loopback else "loopback address"
    if addr.is_unspecified:
        return "unspecified address"
    if addr.is_link_local:
        return "link-local address (includes cloud metadata)"
    if addr.is_multicast:
        return "multicast address"
    if addr.is_private:
        return "private address"
    if addr.is_reserved:
        return "reserved address"
    if isinstance(addr, ipaddress.IPv4Address) and any(addr in n for n in _DENY_V4):
        return "non-public IPv4 range"
    if isinstance(addr, ipaddress.IPv6Address) and any(addr in n for n in _DENY_V6):
        return "non-public IPv6 range"
    if not addr.is_global:
        return "not a globally routable address"
    return None


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses ``getaddrinfo`` gives for ``host`` (TCP), in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        if ip not in out:
            out.append(ip)
    return out


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # hostname (IDNA, lower case) or IP literal without brackets
    port: int
    target: str  # path + query
    addresses: tuple[str, ...]  # checked, in connection order

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _refuse(url: str, reason: str) -> ImageUrlNotAllowed:
    return ImageUrlNotAllowed(
        f"The image URL is not allowed: {reason}",
        suggestion="Use a public http(s) URL of the image",
        details={"url": url[:500], "reason": reason},
    )


def _resolve_within(resolver: Resolver, host: str, port: int, deadline: float) -> list[str]:
    """Run the resolver in a helper thread so a slow DNS server cannot outlast the fetch's deadline."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["ok"] = list(resolver(host, port))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["err"] = exc

    thread = threading.Thread(target=run, name="image-url-dns", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise socket.timeout(f"resolving {host} timed out")
    if "err" in result:
        raise result["err"]  # type: ignore[misc]
    return result["ok"]  # type: ignore[return-value]


def _check_url(
    url: str, *, resolver: Resolver, allow_loopback: bool, trust_resolver: bool, deadline: float
) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise _refuse(url, f"malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(url, "only http and https URLs are fetched")
    if parts.username is not None or parts.password is not None:
        raise _refuse(url, "credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse(url, "the URL has no host")
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        raise _refuse(url, "control characters or spaces in the URL path")
    target = "".join(c if ord(c) < 0x80 else quote(c) for c in target)  # IRI path -> URI path

    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
        checked_by_policy = True  # IP literals never go through the (possibly trusted) resolver
    else:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise _refuse(url, "the host name is not valid") from None
        try:
            addresses = _resolve_within(resolver, host, port, deadline)
        except (OSError, UnicodeError) as exc:
            raise ImageFetchFailed(
                f"The image host {host!r} could not be resolved",
                details={"url": url[:500], "reason": type(exc).__name__},
            ) from None
        if not addresses:
            raise ImageFetchFailed(f"The image host {host!r} has no address", details={"url": url[:500]})
        checked_by_policy = not trust_resolver
    if checked_by_policy:
        for ip in addresses:
            reason = address_refusal(ip, allow_loopback=allow_loopback)
            if reason:
                raise _refuse(url, f"{host} resolves to {ip} ({reason})")
    return _Target(url=url, scheme=scheme, host=host, port=port, target=target, addresses=tuple(addresses))


# ------------------------------------------------------------------ pinned connections under one deadline
class _DeadlineStream(httpcore.NetworkStream):
    """Caps every read/write/handshake timeout at the time left before the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("deadline exceeded")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname=server_hostname, timeout=self._left(timeout)),
            self._deadline,
        )

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the already checked addresses, whatever host name httpcore asks for."""

    def __init__(self, target: _Target, deadline: float) -> None:
        self._target = target
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if port != self._target.port:  # never happens: one pool per checked target
            raise httpcore.ConnectError("unexpected port")
        last: Exception | None = None
        for ip in self._target.addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("deadline exceeded")
            try:
                stream = self._inner.connect_tcp(
                    ip, port, timeout=left if timeout is None else min(timeout, left),
                    local_address=local_address, socket_options=socket_options,
                )  # fmt: skip
                return _DeadlineStream(stream, self._deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError("no address to connect to")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise httpcore.ConnectError("unix sockets are not used")

    def sleep(self, seconds: float) -> None:  # pragma: no cover
        time.sleep(seconds)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process (loading the CA bundle costs tens of ms; contexts are shareable)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


# ------------------------------------------------------------------ the fetch
def fetch_image(
    url: str,
    *,
    max_bytes: int = MAX_BYTES,
    timeout_s: float = TIMEOUT_S,
    allow_loopback: bool = False,
    resolver: Resolver | None = None,
    _trust_resolver: bool = False,
) -> bytes:
    """Fetch the image at ``url`` under the SSRF rules above and return its bytes.

    ``allow_loopback`` admits loopback addresses (127/8, ::1) on every hop; for local development and
    tests only, off by default; every other non-public range stays refused. ``resolver`` replaces
    ``getaddrinfo``: ``(host, port) -> [ip, ...]``; its answers are checked like DNS answers.

    ``_trust_resolver`` is a test-only switch: the injected resolver's answers are not checked (IP
    literals in a URL never go through the resolver and are always checked). It lets a test route a
    made-up public host name to a local server and then show that a redirect from it to a loopback IP
    literal is refused by the redirect's own check; production code never sets it.
    """
    if _trust_resolver and resolver is None:
        raise ValueError("_trust_resolver needs an injected resolver")
    resolve = resolver or default_resolver
    deadline = time.monotonic() + timeout_s
    ctx = _ssl_context()
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        target = _check_url(
            current, resolver=resolve, allow_loopback=allow_loopback, trust_resolver=_trust_resolver, deadline=deadline
        )
        status, location, body = _get(target, ctx, deadline, max_bytes)
        if status in _REDIRECTS:
            if not location:
                raise ImageFetchFailed(f"HTTP {status} redirect without a Location", details={"url": current[:500]})
            if hop == MAX_REDIRECTS:
                raise ImageFetchFailed(
                    f"More than {MAX_REDIRECTS} redirects", details={"url": url[:500], "max_redirects": MAX_REDIRECTS}
                )
            current = urljoin(current, location)
            continue
        if not 200 <= status < 300:
            raise ImageFetchFailed(
                f"The image URL answered HTTP {status}", details={"url": current[:500], "status": status}
            )
        return body
    raise AssertionError("unreachable")  # pragma: no cover


def _get(target: _Target, ctx: ssl.SSLContext, deadline: float, max_bytes: int) -> tuple[int, str | None, bytes]:
    """One GET to the pinned target: (status, Location or None, body; empty for redirects)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageFetchFailed("Fetching the image timed out", details={"url": target.url[:500]})
    headers = [
        (b"Host", target.host_header.encode("ascii")),
        (b"User-Agent", USER_AGENT.encode()),
        (b"Accept", b"image/*"),
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"close"),
    ]
    url = httpcore.URL(
        scheme=target.scheme.encode(), host=target.host.encode("ascii"), port=target.port,
        target=target.target.encode("ascii", "strict"),
    )  # fmt: skip
    extensions: dict[str, Any] = {"timeout": {"connect": left, "read": left, "write": left, "pool": left}}
    if target.scheme == "https" and ":" not in target.host:
        extensions["sni_hostname"] = target.host
    pool = httpcore.ConnectionPool(
        ssl_context=ctx, max_connections=1, retries=0, network_backend=_PinnedBackend(target, deadline)
    )
    try:
        with pool, pool.stream("GET", url, headers=headers, extensions=extensions) as response:
            status = response.status
            hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
            if status in _REDIRECTS:
                return status, hdrs.get("location"), b""
            if not 200 <= status < 300:
                return status, None, b""
            length = hdrs.get("content-length")
            if length is not None and length.strip().isdigit() and int(length) > max_bytes:
                raise _too_large(target, max_bytes)
            body = bytearray()
            for chunk in response.iter_stream():
                body += chunk
                if len(body) > max_bytes:
                    raise _too_large(target, max_bytes)
            return status, None, bytes(body)
    except ImageTooLarge:
        raise
    except httpcore.TimeoutException:
        raise ImageFetchFailed("Fetching the image timed out", details={"url": target.url[:500]}) from None
    except (httpcore.ConnectError, OSError) as exc:
        raise ImageFetchFailed(
            "The image URL could not be reached", details={"url": target.url[:500], "reason": type(exc).__name__}
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise ImageFetchFailed(
            "The image server's answer was not valid HTTP",
            details={"url": target.url[:500], "reason": type(exc).__name__},
        ) from None


def _too_large(target: _Target, max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"The image at the URL is larger than {max_bytes} bytes", details={"url": target.url[:500], "max_bytes": max_bytes}
    )


# ------------------------------------------------------------------ webhook deliveries (the same address rules)
def check_webhook_url(url: str, *, allow_loopback: bool = False, timeout_s: float = 5.0,
                      resolver: Resolver | None = None) -> None:
    """Raise ``WebhookUrlNotAllowed`` unless ``url`` may receive webhooks: https (http too where loopback is
    allowed, i.e. tests and local development) and the address rules above (steps 1-2)."""
    if not allow_loopback and not url.lower().startswith("https://"):
        raise WebhookUrlNotAllowed("Webhook URLs must be https://", details={"url": url[:500]})
    try:
        _check_url(url, resolver=resolver or default_resolver, allow_loopback=allow_loopback,
                   trust_resolver=False, deadline=time.monotonic() + timeout_s)
    except (ImageUrlNotAllowed, ImageFetchFailed) as exc:
        raise _for_webhooks(exc) from None


def _for_webhooks(exc: ImageUrlNotAllowed | ImageFetchFailed) -> WebhookUrlNotAllowed:
    """The address rules' refusal, worded for a webhook URL."""
    return WebhookUrlNotAllowed(exc.message.replace("image URL", "webhook URL").replace("image host", "host"),
                                details=exc.details)


def post_once(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float = 10.0,
              allow_loopback: bool = False, resolver: Resolver | None = None) -> int:
    """POST ``body`` once under the rules above and return the status code. Redirects are never followed
    (a 3xx is returned as is); the response body is never read (a huge one costs nothing); one deadline
    bounds DNS, connect, TLS, write and the wait for the status line. Raises ``WebhookUrlNotAllowed`` for a
    refused or unresolvable address and ``ImageFetchFailed`` when the endpoint cannot be reached or answers
    too late."""
    deadline = time.monotonic() + timeout_s
    try:
        target = _check_url(url, resolver=resolver or default_resolver, allow_loopback=allow_loopback,
                            trust_resolver=False, deadline=deadline)
    except (ImageUrlNotAllowed, ImageFetchFailed) as exc:
        raise _for_webhooks(exc) from None
    hdrs = [(b"Host", target.host_header.encode("ascii")), (b"User-Agent", b"ray-avatars-webhooks/1"),
            (b"Content-Type", b"application/json"), (b"Connection", b"close")]
    hdrs += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    request_url = httpcore.URL(scheme=target.scheme.encode(), host=target.host.encode("ascii"), port=target.port,
                               target=target.target.encode("ascii", "strict"))
    left = max(0.001, deadline - time.monotonic())
    extensions: dict = {"timeout": {"connect": left, "read": left, "write": left, "pool": left}}
    if target.scheme == "https" and ":" not in target.host:
        extensions["sni_hostname"] = target.host
    pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), max_connections=1, retries=0,
                                   network_backend=_PinnedBackend(target, deadline))
    try:
        with pool, pool.stream("POST", request_url, headers=hdrs, content=body, extensions=extensions) as response:
            return response.status
    except httpcore.TimeoutException:
        raise ImageFetchFailed("The endpoint did not answer in time", details={"url": url[:500]}) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
        raise ImageFetchFailed(f"The endpoint could not be reached ({type(exc).__name__})",
                               details={"url": url[:500]}) from None
