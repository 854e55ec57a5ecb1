"""Outbound URL guard against SSRF, for remote model endpoints and webhooks.

A URL may reach public addresses only, unless the allow-list says otherwise. ``check_url``
validates a URL when it is configured (a clear 422 early); ``guarded_client`` and
``guarded_async_client`` are what must actually send the requests: their network backend
resolves each host itself, checks every address, and connects to a checked address, on every
new connection (so on each redirect hop too). Checking a URL once and letting httpx resolve it
again later would leave a DNS-rebinding window; here the address checked is the one connected to.

The rule: a host passes if it matches a name entry (exact, or ``*.suffix``), or if every
address it resolves to is public or inside an IP/CIDR entry. A name entry allows whatever that
name resolves to; an IP entry allows every name resolving to it. Cloud metadata addresses are
the exception: only an entry naming that exact address allows them, never a name or a network.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import httpcore
import httpx

from modelyard.domain.errors import ModelyardError, ValidationFailed

__all__ = ["Destination", "OutboundPolicy", "OutboundRefused", "check_url", "classify",
           "guarded_async_client", "guarded_client", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = {"http": 80, "https": 443}

# Link-local (AWS, GCP, Azure, OCI...), AWS IPv6, GCP IPv6, Alibaba (inside 100.64/10), and
# Azure's WireServer, which is a public address and so needs naming.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "fd20:ce::254", "100.100.100.200", "168.63.129.16"))

# Ranges that Python's ``ipaddress`` predicates miss on some of the versions we run on.
_EXTRA: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("100.64.0.0/10"), "carrier-grade NAT"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "private (local NAT64)"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A name entry's last label must look like a name, not a number ("127.1", "0x7f", "2130706433"),
# so no entry written as a name can match a numeric host that the resolver reads as an address.
_NAME = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)*[a-z](?:[a-z0-9-]*[a-z0-9])?$")


class OutboundRefused(ModelyardError):
    """An outbound URL or connection would reach an address the policy does not allow."""

    code, status, title = "outbound_refused", 422, "Outbound address refused"


@dataclass(frozen=True)
class Destination:
    """What ``check_url`` checked: the host as sent, its port and every address it resolved to."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address ``host`` resolves to, or ``()``: the one place this module asks DNS.

    It goes through ``getaddrinfo``, so numeric forms (``2130706433``, ``0x7f.1``, ``127.1``)
    come back as the address the operating system would actually connect to.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return ()
    found = (ipaddress.ip_address(str(info[4][0])) for info in infos)
    return tuple(dict.fromkeys(found))


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address; else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (``"loopback"``, ``"private"``...), or ``None``."""
    ip = _unwrap(ip)
    if ip in METADATA:
        return "cloud metadata"
    for network, label in _EXTRA:
        if ip in network:
            return label
    checks = (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
              ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("reserved", ip.is_reserved), ("private", ip.is_private),
              ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local))
    why = next((name for name, hit in checks if hit), None)
    return why or (None if ip.is_global else "non-global")


@dataclass(frozen=True)
class OutboundPolicy:
    """The allow-list, parsed once. Build it with ``OutboundPolicy.parse(entries)``."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str]) -> OutboundPolicy:
        if isinstance(allow, str):  # a lone string would be read as one entry per character
            raise ValidationFailed("allow must be a list of entries, not a string", field="allow")
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in allow:
            entry = str(raw).strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*.") and _NAME.match(entry[2:]):
                suffixes.append(entry[1:])
            elif _NAME.match(entry):
                names.add(entry)
            else:
                raise ValidationFailed(f"allow entry {raw!r} is not a host name, *.suffix, IP "
                                       "address or CIDR network", field="allow")
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return _NAME.match(host) is not None and (
            host in self.names or host.endswith(self.suffixes))

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip in net or _unwrap(ip) in net for net in self.networks)

    def check(self, host: str, addresses: Sequence[IPAddress], field: str = "url") -> None:
        """Raise ``OutboundRefused`` unless every address of ``host`` may be reached."""
        by_name = self.allows_name(host)
        for ip in addresses:
            why = classify(ip)
            if why is None:
                continue
            if why == "cloud metadata":
                if not any(net.num_addresses == 1 and _unwrap(ip) == _unwrap(net.network_address)
                           for net in self.networks):
                    raise OutboundRefused(
                        f"{_where(host, ip)} a cloud metadata address; only an allow-list "
                        "entry naming that exact address allows it", field=field)
            elif not (by_name or self.allows_address(ip)):
                raise OutboundRefused(f"{_where(host, ip)} a {why} address, and neither the "
                                      "host nor the address is on the allow-list", field=field)

    def connectable(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """Resolve ``host`` and check it: the addresses a connection may use, in order."""
        addresses = resolve(host, port)
        if not addresses:  # a transport error (retryable), not a policy refusal
            raise httpcore.ConnectError(f"host {host!r} does not resolve")
        self.check(host, addresses)
        return addresses


def _where(host: str, ip: IPAddress) -> str:
    return f"{ip} is" if host.strip("[]") == str(ip) else f"host {host!r} resolves to {ip},"


def _target(url: httpx.URL | str, field: str = "url") -> tuple[str, int]:
    """Host and port of ``url`` after the checks that need no DNS (scheme, credentials, host).

    Parsed by httpx, the same parser the clients use, so the host checked is the host sent.
    Messages never quote the URL: it may carry credentials.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise OutboundRefused("not a valid URL", field=field) from None
    if parsed.scheme not in SCHEMES:
        what = f"scheme {parsed.scheme!r}" if parsed.scheme else "a relative URL"
        raise OutboundRefused(f"{what} is not allowed: use an absolute http:// or https:// URL",
                              field=field)
    if parsed.userinfo:
        raise OutboundRefused("URL must not carry credentials (user:password@host); "
                              "send them in a header", field=field)
    if not parsed.raw_host:
        raise OutboundRefused("URL has no host", field=field)
    return parsed.raw_host.decode("ascii"), parsed.port or SCHEMES[parsed.scheme]


def check_url(url: str, allow: Sequence[str] | OutboundPolicy = (), *,
              field: str = "url", unresolved_ok: bool = False) -> Destination:
    """Refuse (``OutboundRefused``) a URL that is not http(s), carries credentials, does not
    resolve, or resolves to any non-public address not on the allow-list.

    Use it to reject bad configuration early; send with ``guarded_client``, which checks again
    at connect time (DNS answers can change between the two). ``unresolved_ok``: a name that
    does not resolve here (yet) passes with no addresses, for settings that are only used
    later, such as a webhook; numeric hosts always resolve, so they are always judged.
    """
    policy = allow if isinstance(allow, OutboundPolicy) else OutboundPolicy.parse(allow)
    host, port = _target(url, field)
    addresses = resolve(host, port)
    if not addresses:
        if unresolved_ok:
            return Destination(host, port, ())
        raise OutboundRefused(f"host {host!r} does not resolve", field=field)
    policy.check(host, addresses, field)
    return Destination(host, port, addresses)


# --- connect-time enforcement: httpcore network backends --------------------------------------

_S = TypeVar("_S")


def _first_connection(addresses: Sequence[IPAddress], connect: Callable[[str], _S]) -> _S:
    for ip in addresses[:-1]:  # all were checked; try them in resolver order
        try:
            return connect(str(ip))
        except httpcore.ConnectError:
            continue
    return connect(str(addresses[-1]))


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves and checks each host, then connects to a checked IP literal (no second lookup).

    TLS is unaffected: httpcore passes the URL's host name to ``start_tls`` for SNI and
    certificate checks, separately from the address given to ``connect_tcp``.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                    ) -> httpcore.NetworkStream:
        addresses = self.policy.connectable(host, port)
        return _first_connection(addresses, lambda ip: self._inner.connect_tcp(
            ip, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                            ) -> httpcore.NetworkStream:
        raise OutboundRefused("Unix sockets are not allowed for outbound requests")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncGuardedBackend(httpcore.AsyncNetworkBackend):
    """The async twin of ``_GuardedBackend`` (the resolver runs in a worker thread)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await anyio.to_thread.run_sync(self.policy.connectable, host, port)
        for ip in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address,
                                                     socket_options)
            except httpcore.ConnectError:
                continue
        return await self._inner.connect_tcp(str(addresses[-1]), port, timeout, local_address,
                                             socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("Unix sockets are not allowed for outbound requests")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _install_backend(transport: httpx.HTTPTransport | httpx.AsyncHTTPTransport,
                    backend: httpcore.NetworkBackend | httpcore.AsyncNetworkBackend) -> None:
    """Put ``backend`` under the httpcore pool of a freshly built httpx transport.

    httpx 0.28 offers no public way to pass httpcore's ``network_backend``, so this is the one
    place that touches private attributes (``_pool``, ``_network_backend``). Should httpx change
    them, this raises at client construction (and test_outbound.py fails) rather than silently
    losing the connect-time check.
    """
    pool = getattr(transport, "_pool", None)
    expected = (httpcore.ConnectionPool if isinstance(transport, httpx.HTTPTransport)
                else httpcore.AsyncConnectionPool)
    base = (httpcore.NetworkBackend if expected is httpcore.ConnectionPool
            else httpcore.AsyncNetworkBackend)
    if (type(pool) is not expected or not isinstance(backend, base)
            or not isinstance(getattr(pool, "_network_backend", None), base)):
        raise RuntimeError("cannot install the outbound guard: httpx/httpcore internals changed")
    pool._network_backend = backend


# --- clients ------------------------------------------------------------------------------------

_TRANSPORT_OPTIONS = ("verify", "cert", "http1", "http2", "limits")
_REFUSED_OPTIONS = ("proxy", "mounts", "transport", "trust_env")


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    refused = sorted(set(kwargs) & set(_REFUSED_OPTIONS))
    if refused:  # each of these would route requests around the guarded transport
        raise TypeError(f"guarded clients do not take {', '.join(refused)}")
    transport = {k: kwargs.pop(k) for k in _TRANSPORT_OPTIONS if k in kwargs}
    return transport, kwargs


class _GuardedTransport(httpx.BaseTransport):
    """Refuses bad URL shapes per request (so per redirect hop) before the guarded pool."""

    def __init__(self, inner: httpx.HTTPTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _target(request.url)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class _AsyncGuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _target(request.url)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(allow: Sequence[str] | OutboundPolicy = (), *,
                   timeout: float | httpx.Timeout = 10.0, max_redirects: int = 5,
                   **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` whose every connection, redirects included, obeys the policy.

    Other keyword arguments go to ``httpx.Client`` (``verify``, ``http2`` and ``limits`` to
    its transport); ``proxy``, ``mounts``, ``transport`` and ``trust_env`` are refused, and
    proxies from the environment are ignored, since a proxy would connect on our behalf.
    """
    policy = allow if isinstance(allow, OutboundPolicy) else OutboundPolicy.parse(allow)
    transport_options, client_options = _split(dict(kwargs))
    inner = httpx.HTTPTransport(**transport_options)
    _install_backend(inner, _GuardedBackend(policy))
    return httpx.Client(transport=_GuardedTransport(inner), trust_env=False, timeout=timeout,
                        max_redirects=max_redirects, **client_options)


def guarded_async_client(allow: Sequence[str] | OutboundPolicy = (), *,
                         timeout: float | httpx.Timeout = 10.0, max_redirects: int = 5,
                         **kwargs: Any) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` twin of ``guarded_client``."""
    policy = allow if isinstance(allow, OutboundPolicy) else OutboundPolicy.parse(allow)
    transport_options, client_options = _split(dict(kwargs))
    inner = httpx.AsyncHTTPTransport(**transport_options)
    _install_backend(inner, _AsyncGuardedBackend(policy))
    return httpx.AsyncClient(transport=_AsyncGuardedTransport(inner), trust_env=False,
                             timeout=timeout, max_redirects=max_redirects, **client_options)
