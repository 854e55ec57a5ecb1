"""The outbound URL guard: refused URLs, the allow-list, and real connections (127.0.0.x only)
checked at connect time, on redirects and against DNS rebinding."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest

from modelyard.domain.errors import ModelyardError
from modelyard.governance import outbound
from modelyard.governance.outbound import (
    Destination,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    guarded_async_client,
    guarded_client,
)


class Server:
    """A tiny HTTP server in a thread: answers 200 "ok", or 302 to ``redirect_to``."""

    def __init__(self, host: str, redirect_to: str | None = None) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                if outer.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.redirect_to = redirect_to
        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})  # shutdown() in 0.05 s


@contextlib.contextmanager
def serving(host: str = "127.0.0.1", redirect_to: str | None = None) -> Iterator[Server]:
    server = Server(host, redirect_to)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with serving() as s:
        yield s


def refused(url: str, allow: tuple[str, ...] = ()) -> OutboundRefused:
    with pytest.raises(OutboundRefused) as caught:
        check_url(url, allow)
    assert caught.value.code == "outbound_refused" and caught.value.status == 422
    assert caught.value.field == "url"
    return caught.value


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Answer names from ``answers`` (one list per successive lookup); IP literals as usual."""
    real = outbound.resolve
    asked: list[str] = []

    def resolve(host: str, port: int) -> tuple[outbound.IPAddress, ...]:
        if host not in answers:
            return real(host, port)
        asked.append(host)
        replies = answers[host]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return tuple(ipaddress.ip_address(a) for a in reply)

    monkeypatch.setattr(outbound, "resolve", resolve)
    return asked


# --- check_url ----------------------------------------------------------------------------------

def test_the_error_is_a_modelyard_error_with_a_stable_code() -> None:
    assert issubclass(OutboundRefused, ModelyardError)
    problem = OutboundRefused("x", field="url").to_problem()
    assert problem["code"] == "outbound_refused" and problem["status"] == 422


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/_x",
                                 "ftp://example.com/f", "dict://example.com:11211/",
                                 "example.com/path", "//example.com/x"])
def test_only_absolute_http_and_https_are_allowed(url: str) -> None:
    assert "http" in refused(url).detail


def test_a_public_address_passes_and_comes_back_resolved() -> None:
    assert check_url("https://8.8.8.8/dns") == Destination(
        "8.8.8.8", 443, (ipaddress.ip_address("8.8.8.8"),))
    assert check_url("http://[2001:4860:4860::8888]:8080/").port == 8080
    # an IPv4-mapped form of a public address is that public address
    assert check_url("http://[::ffff:8.8.8.8]/").addresses[0] == ipaddress.ip_address(
        "::ffff:8.8.8.8")


@pytest.mark.parametrize("url", ["http://admin:s3cret@8.8.8.8/", "https://admin:s3cret@127.0.0.1/",
                                 "http://token-s3cret@8.8.8.8/"])
def test_credentials_in_the_url_are_refused_and_never_echoed(url: str) -> None:
    error = refused(url)
    assert "credentials" in error.detail
    assert "s3cret" not in str(error) and "s3cret" not in str(error.to_problem())


def test_invalid_urls_are_refused_without_quoting_them() -> None:
    for url in ("http://admin:s3cret@exa mple.com/", "http://admin:s3cret@[::1/", "http:///x"):
        error = refused(url)
        assert "s3cret" not in str(error.to_problem())


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1/", "loopback"), ("http://127.9.9.9:8080/", "loopback"),
    ("http://[::1]/", "loopback"), ("http://localhost/", "loopback"),
    # numeric forms that getaddrinfo reads as 127.0.0.1
    ("http://2130706433/", "loopback"), ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"), ("http://017700000001/", "loopback"),
    ("http://10.1.2.3/", "private"), ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"), ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://169.254.10.1/", "link-local"), ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"), ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"), ("http://255.255.255.255/", "reserved"),
    ("http://0.0.0.0/", "unspecified"), ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://100.64.0.1/", "carrier-grade NAT"), ("http://100.127.255.254/", "carrier-grade NAT"),
    # IPv4 inside IPv6: mapped, 6to4, NAT64
    ("http://[::ffff:127.0.0.1]/", "loopback"), ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"), ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[64:ff9b::a00:1]/", "private"),
    # cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"), ("http://100.100.100.200/", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
])
def test_non_public_addresses_are_refused(url: str, why: str) -> None:
    detail = refused(url).detail
    assert why in detail, detail


def test_a_name_that_does_not_resolve_is_refused_clearly() -> None:
    assert "does not resolve" in refused("https://no-such-host.invalid/").detail


def test_every_resolved_address_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"mixed.example": [["8.8.8.8", "10.0.0.7"]]})
    assert "resolves to 10.0.0.7, a private address" in refused("https://mixed.example/").detail


# --- the allow-list -----------------------------------------------------------------------------

def test_allow_by_ip_and_cidr() -> None:
    check_url("http://127.0.0.1:8080/", ["127.0.0.1"])
    check_url("http://2130706433/", ["127.0.0.0/8"])
    check_url("http://[::1]/", ["[::1]"])
    check_url("http://10.20.30.40/", ["10.20.0.0/16"])
    refused("http://10.21.0.1/", ("10.20.0.0/16",))
    # an address entry allows every name that resolves to it
    check_url("http://localhost/", ["127.0.0.1", "::1"])
    # a mapped form is judged, and allowed, as the IPv4 address inside it
    check_url("http://[::ffff:127.0.0.1]/", ["127.0.0.1"])


def test_allow_by_name_is_case_insensitive_and_allows_what_the_name_resolves_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    check_url("http://LocalHost:9000/", ["LOCALHOST"])
    fake_dns(monkeypatch, {"db.corp.example.": [["10.0.0.3"]]})
    check_url("http://db.corp.example./", ["db.corp.example"])  # a trailing dot is the same name
    # the name entry does not extend to other spellings of the same address
    refused("http://127.0.0.1/", ("localhost",))


def test_allow_by_wildcard(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {name: [["10.9.8.7"]] for name in
                           ("models.corp.example", "a.b.corp.example", "corp.example",
                            "evilcorp.example")})
    refused("https://models.corp.example/")
    allow = ("*.corp.example",)
    check_url("https://models.corp.example/", allow)
    check_url("https://A.B.Corp.Example/", allow)
    refused("https://corp.example/", allow)  # the suffix pattern does not cover the apex
    refused("https://evilcorp.example/", allow)


def test_metadata_needs_the_exact_address(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"meta.corp.example": [["169.254.169.254"]]})
    for allow in (("169.254.0.0/16",), ("*.corp.example",), ("meta.corp.example",)):
        assert "cloud metadata" in refused("http://meta.corp.example/", allow).detail
    refused("http://169.254.169.254/", ("169.254.0.0/16",))
    check_url("http://169.254.169.254/", ["169.254.169.254"])
    check_url("http://meta.corp.example/", ["169.254.169.254/32"])


@pytest.mark.parametrize("entry", ["*", "*.", "", "127.1", "2130706433", "0x7f.1", "*.0.0.1",
                                   "exa mple.com", "http://example.com"])
def test_bad_allow_entries_are_refused(entry: str) -> None:
    with pytest.raises(ModelyardError) as caught:
        OutboundPolicy.parse([entry])
    assert caught.value.code == "validation_failed" and caught.value.field == "allow"


def test_a_lone_string_is_not_an_allow_list() -> None:
    with pytest.raises(ModelyardError):
        check_url("http://127.0.0.1/", "127.0.0.1")  # a str is a Sequence[str] to mypy


# --- the clients: real connections --------------------------------------------------------------

def test_the_client_refuses_a_local_server_by_default(server: Server) -> None:
    with guarded_client() as client:
        for url in (server.url, f"http://localhost:{server.port}/",
                    f"http://2130706433:{server.port}/", f"http://127.1:{server.port}/"):
            with pytest.raises(OutboundRefused):
                client.get(url)
    assert server.hits == []


def test_the_client_reaches_an_allowed_local_server(server: Server) -> None:
    with guarded_client(["127.0.0.1"]) as client:
        assert client.get(server.url + "a").text == "ok"
        assert client.get(f"http://localhost:{server.port}/b").text == "ok"
    assert server.hits == ["/a", "/b"]


def test_the_client_refuses_credentials_and_other_schemes(server: Server) -> None:
    with guarded_client(["127.0.0.1"]) as client:
        with pytest.raises(OutboundRefused) as caught:
            client.get(f"http://user:s3cret@127.0.0.1:{server.port}/")
        assert "s3cret" not in str(caught.value)
        with pytest.raises((OutboundRefused, httpx.UnsupportedProtocol)):
            client.get("file:///etc/passwd")
    assert server.hits == []


def test_a_redirect_to_a_refused_address_is_not_followed() -> None:
    with serving("127.0.0.2") as inner, serving("127.0.0.1", redirect_to=inner.url) as outer:
        with guarded_client(["127.0.0.1/32"], follow_redirects=True) as client, \
                pytest.raises(OutboundRefused) as caught:
            client.get(outer.url)
        assert "127.0.0.2" in caught.value.detail
        assert outer.hits == ["/"] and inner.hits == []
        # with both allowed, the same redirect is followed
        with guarded_client(["127.0.0.1", "127.0.0.2"], follow_redirects=True) as client:
            response = client.get(outer.url)
        assert response.text == "ok" and len(response.history) == 1 and inner.hits == ["/"]


def test_redirects_are_capped(server: Server) -> None:
    server.redirect_to = server.url
    with guarded_client(["127.0.0.1"], follow_redirects=True) as client, \
            pytest.raises(httpx.TooManyRedirects):
        client.get(server.url)
    assert len(server.hits) == 6  # the request and 5 redirects


def test_dns_rebinding_is_caught_at_connect_time(monkeypatch: pytest.MonkeyPatch,
                                                 server: Server) -> None:
    url = f"http://rebind.example:{server.port}/"
    asked = fake_dns(monkeypatch, {"rebind.example": [["8.8.8.8"], ["127.0.0.1"]]})
    check_url(url)  # the first answer is public: the early check passes...
    with guarded_client() as client, pytest.raises(OutboundRefused) as caught:
        client.get(url)  # ...but the connection is checked on the answer it would use
    assert "resolves to 127.0.0.1, a loopback address" in caught.value.detail
    assert asked == ["rebind.example", "rebind.example"] and server.hits == []


def test_the_client_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch,
                                                       server: Server) -> None:
    # "checked.example" exists only in the guard's resolver: reaching the server proves the
    # connection went to the checked address, with no second lookup by anybody else.
    fake_dns(monkeypatch, {"checked.example": [["127.0.0.1"]]})
    with guarded_client(["127.0.0.1"]) as client:
        response = client.get(f"http://checked.example:{server.port}/c")
    assert response.text == "ok" and server.hits == ["/c"]


def test_every_address_is_checked_at_connect_time(monkeypatch: pytest.MonkeyPatch,
                                                  server: Server) -> None:
    fake_dns(monkeypatch, {"two.example": [["127.0.0.1", "10.0.0.1"]]})
    with guarded_client(["127.0.0.1"]) as client, pytest.raises(OutboundRefused):
        client.get(f"http://two.example:{server.port}/")
    assert server.hits == []


def test_environment_proxies_are_ignored(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    # A proxy would connect on our behalf, past the guard; the guarded client never uses one.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with guarded_client(["127.0.0.1"]) as client:
        assert client.get(server.url).text == "ok"
    for option in ("proxy", "mounts", "transport", "trust_env"):
        options: dict[str, Any] = {option: None}
        with pytest.raises(TypeError):
            guarded_client(**options)


def test_the_backend_sits_under_the_httpx_pool() -> None:
    """Fails loudly if httpx/httpcore move the private attributes the guard relies on."""
    policy = OutboundPolicy.parse(["127.0.0.1"])
    sync = httpx.HTTPTransport()
    outbound._install_backend(sync, outbound._GuardedBackend(policy))
    assert isinstance(sync._pool, httpcore.ConnectionPool)
    assert isinstance(sync._pool._network_backend, outbound._GuardedBackend)
    asynchronous = httpx.AsyncHTTPTransport()
    outbound._install_backend(asynchronous, outbound._AsyncGuardedBackend(policy))
    assert isinstance(asynchronous._pool._network_backend, outbound._AsyncGuardedBackend)
    with pytest.raises(RuntimeError):  # a proxy pool is not what the guard expects
        outbound._install_backend(httpx.HTTPTransport(proxy="http://127.0.0.1:9"),
                                  outbound._GuardedBackend(policy))


def test_the_async_client_is_guarded_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"rebind.example": [["8.8.8.8"], ["127.0.0.1"]]})

    async def scenario(server: Server, inner: Server) -> None:
        async with guarded_async_client() as client:
            with pytest.raises(OutboundRefused):
                await client.get(server.url)
            check_url(f"http://rebind.example:{server.port}/")
            with pytest.raises(OutboundRefused):
                await client.get(f"http://rebind.example:{server.port}/")
        async with guarded_async_client(["127.0.0.1"], follow_redirects=True) as client:
            assert (await client.get(server.url + "x")).text == "ok"
            with pytest.raises(OutboundRefused):
                await client.get(server.url.replace("127.0.0.1", "127.0.0.2", 1))
            server.redirect_to = inner.url
            with pytest.raises(OutboundRefused):
                await client.get(server.url + "y")

    with serving() as server, serving("127.0.0.2") as inner:
        asyncio.run(scenario(server, inner))
        assert server.hits == ["/x", "/y"] and inner.hits == []
