"""SSRF-safe image fetching against a real local HTTP server.

How the redirect tests prove that each redirect is re-checked: a redirect *to loopback* can only be told
apart from "loopback is refused anyway" if the first hop to the same local server was allowed. With
``allow_loopback=True`` both hops would be allowed, so that flag cannot show it. Instead the first hop uses
a made-up host name under the reserved ``.test`` TLD (it never resolves in real DNS) that an injected,
test-only trusted resolver (``_trust_resolver=True``) pins to 127.0.0.1; IP literals never go through the
resolver, so the redirect to ``http://127.0.0.1:<port>/...`` is judged by the address policy alone and
must be refused, while a redirect back to the ``.test`` name (control) is followed. The server's request
log shows the refused target was never requested.
"""
from __future__ import annotations

import http.server
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from core.errors import ImageFetchFailed, ImageTooLarge, ImageUrlNotAllowed
from pipelines.faces.url_fetch import address_refusal, fetch_image

IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # bytes stand-in; decoding is tested elsewhere
HOST = "avatars-cdn.test"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close-delimited bodies: a response may come without Content-Length

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802
        self.server.log.append((self.path, self.headers.get("Host")))
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/img":
            self._send(200, IMAGE, length=True)
        elif url.path == "/redirect":
            self.send_response(int(q.get("code", 302)))
            self.send_header("Location", q["to"])
            self.end_headers()
        elif url.path == "/chain":
            n = int(q["n"])
            self.send_response(302)
            self.send_header("Location", f"/chain?n={n - 1}" if n > 0 else "/img")
            self.end_headers()
        elif url.path == "/big":  # streamed, no Content-Length
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for _ in range(int(q.get("chunks", 64))):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif url.path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
        elif url.path == "/stall":
            time.sleep(3)  # the behaviour under test: a server slower than the fetch's deadline
            self._send(200, IMAGE, length=True)
        else:
            self._send(404, b"not found", length=True)

    def _send(self, code, body, length):
        self.send_response(code)
        self.send_header("Content-Type", "image/jpeg")
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.log = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server):
    server.log.clear()
    return f"http://127.0.0.1:{server.server_port}"


def pinned(host: str = HOST, ip: str = "127.0.0.1"):
    def resolve(h: str, port: int) -> list[str]:
        assert h == host, f"unexpected lookup of {h}"
        return [ip]

    return resolve


# ------------------------------------------------------------------ the address policy
@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.10", "240.0.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1",
        "::ffff:169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::1", "2001:db8::1",
        "fe80::1%eth0", "not-an-ip",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(ip):
    assert address_refusal(ip) is not None


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_pass(ip):
    assert address_refusal(ip) is None


def test_ipv6_spellings_of_ipv4_are_refused_and_say_what_they_carry():
    # Real DNS answers for public hosts use plain IPv4/IPv6; transition forms are refused outright.
    assert "127.0.0.1" in address_refusal("::ffff:7f00:1")
    assert "169.254.169.254" in address_refusal("2002:a9fe:a9fe::")  # 6to4 of the metadata address
    assert address_refusal("::ffff:8.8.8.8") == "IPv6 form of an IPv4 address"


def test_allow_loopback_admits_loopback_only():
    assert address_refusal("127.0.0.1", allow_loopback=True) is None
    assert address_refusal("::1", allow_loopback=True) is None
    for ip in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "0.0.0.0"):
        assert address_refusal(ip, allow_loopback=True) is not None


# ------------------------------------------------------------------ refused URLs (no request is made)
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img",
        "http://localhost:{port}/img",
        "http://[::1]:{port}/img",
        "http://[::ffff:127.0.0.1]:{port}/img",
        "http://2130706433:{port}/img",  # 127.0.0.1 as a decimal integer
        "http://10.0.0.1/img",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/img",
        "ftp://example.com/img.jpg",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:pass@example.com/img.jpg",
        "http:///img.jpg",
        "not a url",
    ],
)
def test_refused_urls(url, server, base):
    with pytest.raises(ImageUrlNotAllowed) as err:
        fetch_image(url.format(port=server.server_port))
    assert err.value.code == "IMAGE_URL_NOT_ALLOWED" and err.value.status == 400
    assert server.log == []  # refused before any connection


def test_hostname_resolving_to_a_private_address(server, base):
    with pytest.raises(ImageUrlNotAllowed, match="10.0.0.7"):
        fetch_image("http://images.example.com/face.jpg", resolver=pinned("images.example.com", "10.0.0.7"))


def test_every_resolved_address_must_be_public():
    def resolve(host, port):
        return ["93.184.216.34", "192.168.1.20"]

    with pytest.raises(ImageUrlNotAllowed, match="192.168.1.20"):
        fetch_image("https://images.example.com/face.jpg", resolver=resolve)


def test_unresolvable_host_fails_to_fetch():
    def resolve(host, port):
        raise socket.gaierror("no such host")

    with pytest.raises(ImageFetchFailed):
        fetch_image("https://images.example.com/face.jpg", resolver=resolve)


# ------------------------------------------------------------------ real fetches from the local server
def test_fetch_from_local_server(server, base):
    assert fetch_image(f"{base}/img", allow_loopback=True) == IMAGE
    assert server.log == [("/img", f"127.0.0.1:{server.server_port}")]


def test_connects_to_the_pinned_address_with_the_hostname_in_host(server):
    # "avatars-cdn.test" has no DNS entry: only the pinned address can have reached the server.
    url = f"http://{HOST}:{server.server_port}/img"
    server.log.clear()
    assert fetch_image(url, resolver=pinned(), _trust_resolver=True) == IMAGE
    assert server.log == [("/img", f"{HOST}:{server.server_port}")]


def test_redirect_to_loopback_is_refused(server):
    port = server.server_port
    server.log.clear()
    url = f"http://{HOST}:{port}/redirect?to=http://127.0.0.1:{port}/img"
    with pytest.raises(ImageUrlNotAllowed, match="127.0.0.1"):
        fetch_image(url, resolver=pinned(), _trust_resolver=True)
    assert [p for p, _ in server.log] == [f"/redirect?to=http://127.0.0.1:{port}/img"]  # /img never asked


def test_redirect_back_to_the_allowed_host_is_followed(server):
    # Control for the test above: same first hop, a redirect target that passes the check.
    port = server.server_port
    server.log.clear()
    for code in (301, 302, 303, 307, 308):
        url = f"http://{HOST}:{port}/redirect?code={code}&to=http://{HOST}:{port}/img"
        assert fetch_image(url, resolver=pinned(), _trust_resolver=True) == IMAGE
    assert [p for p, _ in server.log].count("/img") == 5


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x", "file:///etc/passwd"])
def test_redirects_are_rechecked_even_with_loopback_allowed(server, base, target):
    with pytest.raises(ImageUrlNotAllowed):
        fetch_image(f"{base}/redirect?to={target}", allow_loopback=True)
    assert len(server.log) == 1


def test_at_most_three_redirects(server, base):
    assert fetch_image(f"{base}/chain?n=2", allow_loopback=True) == IMAGE  # 3 redirects
    with pytest.raises(ImageFetchFailed, match="redirects"):
        fetch_image(f"{base}/chain?n=3", allow_loopback=True)  # 4 redirects


def test_oversize_streamed_response(server, base):
    with pytest.raises(ImageTooLarge) as err:
        fetch_image(f"{base}/big?chunks=64", allow_loopback=True, max_bytes=1024 * 1024)  # 4 MiB sent
    assert err.value.code == "IMAGE_TOO_LARGE" and err.value.status == 413
    # Within the cap the same endpoint is fine.
    assert len(fetch_image(f"{base}/big?chunks=4", allow_loopback=True, max_bytes=1024 * 1024)) == 4 * 65536


def test_oversize_declared_length_is_refused_before_reading(server, base):
    with pytest.raises(ImageTooLarge):
        fetch_image(f"{base}/big-declared", allow_loopback=True)


def test_default_cap_is_10_mb(server, base):
    with pytest.raises(ImageTooLarge):
        fetch_image(f"{base}/big?chunks=161", allow_loopback=True)  # 10 MiB + 64 KiB, no Content-Length


def test_http_error_and_unreachable(server, base):
    with pytest.raises(ImageFetchFailed, match="404"):
        fetch_image(f"{base}/missing", allow_loopback=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed_port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ImageFetchFailed):
        fetch_image(f"http://127.0.0.1:{closed_port}/img", allow_loopback=True)


def test_timeout_is_a_fetch_failure(server, base):
    with pytest.raises(ImageFetchFailed, match="timed out"):
        fetch_image(f"{base}/stall", allow_loopback=True, timeout_s=0.5)


def test_trust_switch_needs_an_injected_resolver():
    with pytest.raises(ValueError):
        fetch_image("http://example.com/", _trust_resolver=True)


# ------------------------------------------------------------------ TLS: pinned IP, hostname for SNI and certificate
def _tls_material(tmp_path, names: list[str]):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faces test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


@pytest.fixture
def tls_server(tmp_path):
    import ssl

    ca_pem, cert_file, key_file = _tls_material(tmp_path, [HOST])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    sni_seen: list[str | None] = []
    ctx.sni_callback = lambda sock, name, c: sni_seen.append(name)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    srv.log = []
    srv.sni_seen = sni_seen
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, ca_pem
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def trust_test_ca(monkeypatch):
    import ssl

    from pipelines.faces import url_fetch

    def install(ca_pem: str):
        monkeypatch.setattr(url_fetch, "_ssl_context", lambda: ssl.create_default_context(cadata=ca_pem))

    return install


def test_https_uses_the_hostname_for_sni_and_certificate(tls_server, trust_test_ca):
    srv, ca_pem = tls_server
    trust_test_ca(ca_pem)
    url = f"https://{HOST}:{srv.server_port}/img"
    assert fetch_image(url, resolver=pinned(), _trust_resolver=True) == IMAGE
    assert srv.sni_seen == [HOST]
    assert srv.log == [("/img", f"{HOST}:{srv.server_port}")]


def test_https_certificate_for_another_name_is_refused(tls_server, trust_test_ca):
    srv, ca_pem = tls_server
    trust_test_ca(ca_pem)
    other = "elsewhere.test"  # pinned to the same server, whose certificate is not for this name
    with pytest.raises(ImageFetchFailed):
        fetch_image(f"https://{other}:{srv.server_port}/img", resolver=pinned(other), _trust_resolver=True)
    assert srv.log == []


def test_https_untrusted_certificate_is_refused(tls_server):
    srv, _ = tls_server  # the test CA is not trusted: the default (certifi) store is used
    with pytest.raises(ImageFetchFailed):
        fetch_image(f"https://{HOST}:{srv.server_port}/img", resolver=pinned(), _trust_resolver=True)
    assert srv.log == []


def test_slow_dns_counts_against_the_deadline():
    def slow(host, port):
        time.sleep(2)  # the behaviour under test: a resolver slower than the fetch's deadline
        return ["93.184.216.34"]

    with pytest.raises(ImageFetchFailed):
        fetch_image("http://images.example.com/face.jpg", resolver=slow, timeout_s=0.3)
