"""The client's address, for limits keyed on it (login throttling, sockets per address).

In production daphne listens on 127.0.0.1 behind a reverse proxy, so the peer of every request
is the proxy. Its `X-Forwarded-For` says who the client was, but any client can send that
header too: it is read only when the peer is a proxy listed in `TRUSTED_PROXIES` (addresses
or networks), walking the list from the right and skipping the trusted proxies; the first
address no trusted proxy stands for is the client. With no trusted proxy the peer is the
client and the header is ignored.
"""

from __future__ import annotations

import ipaddress
from functools import cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies)


def _trusted(address: str) -> bool:
    proxies = tuple(settings.TRUSTED_PROXIES)
    if not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(proxies))


def client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address from the connection's peer and its X-Forwarded-For header."""
    if not peer or not forwarded_for or not _trusted(peer):
        return peer
    address = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            hop_address = str(ipaddress.ip_address(hop))
        except ValueError:
            return address  # not written by a proxy of ours: the last hop one of them saw
        address = hop_address
        if not _trusted(address):
            return address
    return address  # every hop is one of our proxies: the request came from inside


def request_client_ip(request: HttpRequest) -> str | None:
    """For Django requests (django-axes' AXES_CLIENT_IP_CALLABLE)."""
    return client_ip(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def scope_client_ip(scope: dict) -> str | None:
    """For ASGI scopes (the WebSocket consumer)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == b"x-forwarded-for"
    ]
    return client_ip(peer, ",".join(forwarded) if forwarded else None)
