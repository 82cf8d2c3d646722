"""The client's address, by one rule, for everything that limits by address (query rate limits, sign-in limits).

A request's direct peer is its client, unless the peer is one of ``KB_TRUSTED_PROXIES`` (addresses or networks):
then ``X-Forwarded-For`` names the client, and the client is the right-most address of that chain that is not a
trusted proxy (each proxy appends the address it was connected from; what a client wrote further left is not
believed). ``X-Forwarded-Proto`` (http or https) is taken from trusted peers alone too. Uvicorn's own proxy
handling is off (``kb serve``), so this middleware is the only place that reads these headers; the rest reads
``client_address(scope)``.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from kb.errors import Problem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """``KB_TRUSTED_PROXIES``: comma-separated addresses or CIDR networks; empty: none (every peer is a client)."""

    def __init__(self, setting: str, name: str = "KB_TRUSTED_PROXIES"):
        self.networks: list[Network] = []
        for entry in (e.strip() for e in setting.split(",")):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise Problem(f"{name}: {entry!r} is not an IP address or network") from None

    def trusts(self, host: str) -> bool:
        address = _ip(host)
        return address is not None and any(address in n for n in self.networks)

    def client(self, peer: str, forwarded_for: list[str]) -> str:
        """The client of a request from PEER that carried these X-Forwarded-For values (in header order)."""
        if not self.trusts(peer):
            return peer
        chain = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        chain = [hop for hop in chain if hop]
        for hop in reversed(chain):
            if not self.trusts(hop):
                return _host(hop)
        return _host(chain[0]) if chain else peer  # every hop a proxy of ours: the first one asked


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(_host(host))
    except ValueError:
        return None


def _host(hop: str) -> str:
    """An address as proxies write it: bare, ``1.2.3.4:port`` or ``[v6]:port``; anything else as it is."""
    if hop.startswith("[") and "]" in hop:
        return hop[1 : hop.index("]")]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


class ForwardedClient:
    """ASGI middleware: ``scope["client"]`` (and ``scope["scheme"]``) as the rule above says."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies):
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] in ("http", "websocket") and peer and self.trusted.trusts(peer[0]):
            forwarded, proto = [], None
            for key, value in scope.get("headers") or ():
                if key == b"x-forwarded-for":
                    forwarded.append(value.decode("latin-1"))
                elif key == b"x-forwarded-proto":
                    proto = value.decode("latin-1").split(",")[-1].strip().lower()
            if forwarded:
                host = self.trusted.client(peer[0], forwarded)
                scope["client"] = (host, 0)
            if proto in ("http", "https"):
                scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    """The request's client address (after ``ForwardedClient``), at most 64 characters; "unknown" if none."""
    client = scope.get("client")
    return str(client[0])[:64] if client and client[0] else "unknown"
