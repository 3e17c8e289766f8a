"""The served remote's limits (body size, rate, header and key length), TLS, plain http:// refused off loopback,
and hypothesis throwing random requests at it: never a 5xx, and the server stays up."""

from __future__ import annotations

import http.client
import socket
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ckstore.errors import RemoteAccessDenied, RemoteError, RemoteUnavailable, UsageError
from ckstore.serve.audit import read_audit
from ckstore.serve.tokens import state_dir
from ckstore.transport import open_transport
from ckstore.transport.http import HttpTransport
from tlscerts import make_ca

from .conftest import start

MIB = 1 << 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    s = start(tmp_path_factory.mktemp("limited"), max_request=1 * MIB, rate=5)
    yield s
    s.server.stop()


def test_body_over_the_limit_is_413(limited):
    t = limited.client("big", max_retries=0)
    t.put("packs/ab/ok.pack", b"x" * MIB)
    with pytest.raises(RemoteError, match="over the server's limit of 1 MiB") as info:
        t.put("packs/ab/big.pack", b"x" * (3 * MIB))
    assert not isinstance(info.value, RemoteUnavailable)
    assert not (limited.root / "big" / "packs" / "ab" / "big.pack").exists()
    assert any(e["result"] == 413 for e in read_audit(state_dir(limited.root)))


def test_rate_limit_is_429_with_retry_after(limited):
    secret = limited.token("read")
    t = limited.client("rl", secret, max_retries=0)
    with pytest.raises(RemoteUnavailable, match="rate limit of 5 requests/s exceeded"):
        for _ in range(20):
            t.exists("k")
    conn = http.client.HTTPConnection("127.0.0.1", limited.server.port, timeout=10)
    conn.request("HEAD", "/rl/k/k", headers={"authorization": f"Bearer {secret}"})
    resp = conn.getresponse()
    assert resp.status == 429 and int(resp.getheader("retry-after")) >= 1
    # with retries, the client waits as asked and gets through
    assert limited.client("rl", secret, max_retries=3).exists("k") is False


def test_header_and_key_limits(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.request("GET", "/r/k/x", headers={"x-big": "a" * 40000})
    assert conn.getresponse().status == 431
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.request("GET", "/r/k/" + "a" * 1100, headers={"authorization": f"Bearer {served.admin}"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"longer than 1024 bytes" in resp.read()
    with pytest.raises(UsageError):
        served.client("r").get("a" * 1100)


def test_state_directory_is_not_a_remote(served):
    served.client("r2").put("x", b"1")
    for name in (".ckstore-serve", "..", "%2e%2e"):
        conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
        conn.request("GET", f"/{name}/k/tokens.json", headers={"authorization": f"Bearer {served.admin}"})
        resp = conn.getresponse()
        assert resp.status == 404 and b"digest" not in resp.read()
    with pytest.raises(UsageError):
        HttpTransport(f"{served.base}/.ckstore-serve/x", token=served.admin)


def test_plain_http_refused_off_loopback():
    with pytest.raises(UsageError, match="refusing plain http://"):
        HttpTransport("http://10.1.2.3:8470/team", token="x")
    with pytest.raises(UsageError, match="refusing plain http://"):
        open_transport("http://models.example.com:8470/team")
    HttpTransport("http://10.1.2.3:8470/team", token="x", allow_http=True)   # allowed when asked (no request)
    HttpTransport("http://localhost:8470/team")
    HttpTransport("http://[::1]:8470/team")


def test_tls_needs_the_ca_bundle(tmp_path):
    ca = make_ca(tmp_path / "ca")
    root = tmp_path / "root"
    root.mkdir()
    from ckstore.serve.app import ServeConfig
    from ckstore.serve.server import BackgroundServer
    from ckstore.serve.tokens import TokenStore
    _, secret = TokenStore(state_dir(root)).add("adm", ["admin"])
    server = BackgroundServer.start(ServeConfig(root), tls_cert=str(ca.server_cert), tls_key=str(ca.server_key))
    try:
        url = f"https://127.0.0.1:{server.port}/tls"
        with pytest.raises(RemoteAccessDenied, match="certificate is not trusted") as info:
            HttpTransport(url, token=secret).put("k", b"v")
        assert "ca_bundle" in info.value.hint
        t = HttpTransport(f"ckstore://127.0.0.1:{server.port}/tls", token=secret, ca_bundle=str(ca.ca_cert))
        assert t.url == url
        t.put("k", b"v")
        assert t.get("k") == b"v"
        t.close()
        with open_transport(url, token=secret, ca_bundle=str(ca.ca_cert)) as opened:
            assert opened.get("k") == b"v"
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ fuzzing
METHODS = st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS", "BREW", "get", "TRACE"])
SEGMENT = st.text(alphabet=string.printable + "é\u2028%", max_size=30)
PATHS = st.one_of(
    st.builds(lambda r, k: f"/{r}/k/{k}", st.sampled_from(["fz", "..", ".ckstore-serve", "", "a b", "%00"]), SEGMENT),
    st.builds(lambda r, q: f"/{r}/list?{q}", st.sampled_from(["fz", "x"]), SEGMENT),
    SEGMENT.map(lambda s: "/" + s))
HEADERS = st.dictionaries(st.sampled_from(["range", "if-match", "if-none-match", "content-length", "authorization",
                                           "x-junk", "transfer-encoding", "content-type"]),
                          st.text(alphabet=string.printable.strip() + " ", max_size=40), max_size=4)


def _quote_path(path: str) -> str:
    return "".join(c if 33 <= ord(c) < 127 else f"%{ord(c) & 0xff:02X}" for c in path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, path=PATHS, headers=HEADERS, body=st.binary(max_size=300), auth=st.booleans())
def test_fuzz_requests_never_5xx(served, method, path, headers, body, auth):
    if auth:
        headers = {**headers, "authorization": f"Bearer {served.admin}"}
    headers.pop("content-length", None)
    headers.pop("transfer-encoding", None)
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    try:
        conn.request(method, _quote_path(path), body=body if method not in ("GET", "HEAD") else None,
                     headers=headers)
        assert conn.getresponse().status < 500
    finally:
        conn.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=400),
                     st.builds(lambda m, p, h: f"{m} {p} HTTP/1.1\r\n{h}\r\n\r\n".encode("utf-8", "replace"),
                               METHODS, SEGMENT, st.text(max_size=80))))
def test_fuzz_raw_bytes_never_5xx(served, raw):
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=5) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(64)
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            reply = b""
    if reply.startswith(b"HTTP/1.1 "):
        assert reply[9:10] in (b"1", b"2", b"3", b"4"), reply
    served.client("fz").put("alive", b"yes")
    assert served.client("fz").get("alive") == b"yes"
