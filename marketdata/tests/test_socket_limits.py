"""Open sockets per user and per address, on real sockets to a real daphne.

The daphne here runs with small limits (WS_MAX_SOCKETS_PER_USER=2, WS_MAX_SOCKETS_PER_IP=4)
and a key prefix of its own. Addresses other than 127.0.0.1 are other loopback addresses
(127.0.0.2, ...) the test's sockets bind to, as clients on other machines would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import pytest
import redis.asyncio as aioredis
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from testing.helpers import daphne_command, wait_for_http
from tredye.client_ip import client_ip, scope_client_ip
from tredye.devbroker import free_port

pytestmark = pytest.mark.django_db(transaction=True)

PER_USER = 2
PER_IP = 4


class Server:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://") + "/ws/stream/"
        self.prefix = prefix

    def key(self, kind: str, ident: object) -> str:
        return f"{self.prefix}ws:sockets:{kind}:{ident}"


def start_daphne(start_process, name: str, **env: str) -> Server:
    port = free_port()
    prefix = f"wslim{uuid.uuid4().hex[:8]}."
    process = start_process(
        name,
        *daphne_command(port),
        env={
            "KAFKA_TOPIC_PREFIX": prefix,
            "WS_MAX_SOCKETS_PER_USER": str(PER_USER),
            "WS_MAX_SOCKETS_PER_IP": str(PER_IP),
            "WS_HEARTBEAT_INTERVAL_S": "0.5",
            "TRUSTED_PROXIES": "",
            **env,
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", 30, process.popen)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{process.output()}") from error
    return Server(url, prefix)


@pytest.fixture(scope="module")
def limited_server(start_process) -> Server:
    return start_daphne(start_process, "daphne-socket-limits")


@pytest.fixture(scope="module")
def redisless_server(start_process) -> Server:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    return start_daphne(
        start_process, "daphne-no-redis", REDIS_URL=dead, CHANNEL_LAYER_REDIS_URL=dead
    )


@pytest.fixture
def make_session():
    """A signed-in user's session cookie."""

    def make() -> tuple[object, str]:
        user = get_user_model().objects.create_user(f"ws-{uuid.uuid4().hex[:10]}")
        client = Client()
        client.force_login(user)
        return (
            user,
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}",
        )

    return database_sync_to_async(make)


class Socket:
    def __init__(self, connection, first: dict) -> None:
        self.connection = connection
        self.first = first

    async def close(self) -> None:
        await self.connection.close()


async def open_socket(
    server: Server, *, cookie: str | None = None, address: str = "127.0.0.1", headers=None
) -> Socket:
    extra = dict(headers or {})
    if cookie:
        extra["Cookie"] = cookie
    connection = await websockets.connect(
        server.ws_url,
        origin=server.url,
        additional_headers=extra,
        local_addr=(address, 0),
        open_timeout=10,
    )
    first = json.loads(await asyncio.wait_for(connection.recv(), 10))
    return Socket(connection, first)


async def refused(socket: Socket) -> bool:
    """True when the socket was told too_many_sockets and closed with 4429."""
    if socket.first.get("op") != "error":
        return False
    assert socket.first["code"] == "too_many_sockets"
    assert socket.first["detail"]
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(socket.connection.recv(), 5)
    assert socket.connection.close_code == 4429
    return True


async def close_all(sockets: list[Socket]) -> None:
    for socket in sockets:
        await socket.close()


async def test_sockets_past_the_per_user_limit_are_refused_and_closing_one_frees_a_slot(
    limited_server, make_session
):
    _user, cookie = await make_session()
    _other, other_cookie = await make_session()
    sockets = [await open_socket(limited_server, cookie=cookie) for _ in range(PER_USER)]
    assert [s.first["op"] for s in sockets] == ["welcome"] * PER_USER

    # one more for the same user: told why, then closed with 4429
    extra = await open_socket(limited_server, cookie=cookie)
    assert await refused(extra)
    assert extra.first["limit"] == PER_USER
    # another user is not affected
    other = await open_socket(limited_server, cookie=other_cookie)
    assert other.first["op"] == "welcome"

    # closing one frees its slot
    await sockets.pop().close()
    again = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        again = await open_socket(limited_server, cookie=cookie)
        if again.first["op"] == "welcome":
            break
        await refused(again)
        await asyncio.sleep(0.1)
    assert again.first["op"] == "welcome"
    await close_all([*sockets, other, again])


async def test_sockets_past_the_per_address_limit_are_refused(limited_server):
    address, elsewhere = "127.0.0.2", "127.0.0.3"
    sockets = [await open_socket(limited_server, address=address) for _ in range(PER_IP)]
    assert all(s.first["op"] == "welcome" for s in sockets)

    assert await refused(await open_socket(limited_server, address=address))
    # a made-up X-Forwarded-For from an untrusted peer does not give a fresh address
    spoofed = await open_socket(
        limited_server, address=address, headers={"X-Forwarded-For": "198.51.100.1"}
    )
    assert await refused(spoofed)
    # another address is not affected
    other = await open_socket(limited_server, address=elsewhere)
    assert other.first["op"] == "welcome"
    await close_all([*sockets, other])


async def test_a_crashed_process_sockets_stop_counting_once_their_entries_expire(
    limited_server, make_session
):
    user, cookie = await make_session()
    client = aioredis.from_url(settings.REDIS_URL)
    key = limited_server.key("user", user.pk)
    # two sockets of a process that died without closing them: their last renewal has expired
    now, _ = await client.time()
    await client.zadd(key, {"crashed-1": now - 1, "crashed-2": now - 5})
    socket = await open_socket(limited_server, cookie=cookie)
    assert socket.first["op"] == "welcome"
    # while a live socket's entry is pushed on by its heartbeat (every 0.5 s here)
    members = await client.zrange(key, 0, -1, withscores=True)
    assert [m for m, _ in members] == [m for m, _ in members if not m.startswith(b"crashed")]
    [(member, first_expiry)] = members
    await asyncio.sleep(1.5)
    assert await client.zscore(key, member) > first_expiry
    # and removed when the socket closes
    await socket.close()
    for _ in range(100):  # the server closes its side a moment later
        if not await client.zcard(key):
            break
        await asyncio.sleep(0.05)
    assert await client.zcard(key) == 0
    await client.aclose()


async def test_with_redis_away_the_limits_are_not_applied(redisless_server, make_session):
    _user, cookie = await make_session()
    sockets = [await open_socket(redisless_server, cookie=cookie) for _ in range(PER_USER + 2)]

    assert [s.first["op"] for s in sockets] == ["welcome"] * (PER_USER + 2)
    status = json.loads(await asyncio.wait_for(sockets[-1].connection.recv(), 5))
    assert status["op"] == "status"
    assert status["live"] == "down"
    await close_all(sockets)


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ([], "10.0.0.1", "198.51.100.7", "10.0.0.1"),  # no trusted proxy: header ignored
        (["127.0.0.1"], "127.0.0.1", "198.51.100.7", "198.51.100.7"),
        (["127.0.0.1"], "127.0.0.1", None, "127.0.0.1"),
        (["127.0.0.1"], "10.0.0.1", "198.51.100.7", "10.0.0.1"),  # peer is not our proxy
        # a client's own made-up entry stands left of the one our proxy wrote
        (["127.0.0.1"], "127.0.0.1", "1.2.3.4, 198.51.100.7", "198.51.100.7"),
        # two proxies of ours: skipped from the right
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),
        (["127.0.0.1"], "127.0.0.1", "not-an-address", "127.0.0.1"),
    ],
)
def test_the_client_address_honours_x_forwarded_for_only_from_a_trusted_proxy(
    settings, trusted, peer, forwarded, expected
):
    settings.TRUSTED_PROXIES = trusted
    assert client_ip(peer, forwarded) == expected
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    assert scope_client_ip({"client": [peer, 5000], "headers": headers}) == expected
