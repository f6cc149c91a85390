"""Helpers for every app's tests that are not factories: processes and waiting, the order path,
the ledger, Kafka topics, the JSON API and the price stream."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.test import Client

    from accounts.models import Account, Asset
    from trading.models import Instrument, Order

ROOT = Path(__file__).resolve().parents[1]
_client_order_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------
# Processes, threads and waiting
# ---------------------------------------------------------------------------------------------


def manage(*args: str) -> list[str]:
    """The command line of a management command, run as its own process."""
    return [sys.executable, str(ROOT / "manage.py"), *args]


def daphne_command(port: int) -> list[str]:
    """The web process, as the Procfile runs it, on 127.0.0.1:`port`."""
    return [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
        "tredye.asgi:application",
    ]  # fmt: skip


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen) -> None:
    """Wait until `url` answers 200; fail at once if `process` (its server) exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def wait_for(
    condition: Callable[[], object], timeout_s: float = 20.0, what: str = "condition"
) -> object:
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def race(count: int, work: Callable[[int], object]) -> list[object]:
    """Run work(0) … work(count - 1) in threads released together; return, per thread, what it
    returned or the exception it raised. Each thread closes its own database connection."""
    from django.db import connections

    barrier = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[index] = work(index)
        except BaseException as error:  # noqa: BLE001 - the test looks at it
            outcomes[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (deadlock?)"
    return outcomes


def terminate_backends(application_name: str) -> int:
    """Kill every PostgreSQL backend of `application_name`; return how many there were."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


# ---------------------------------------------------------------------------------------------
# The order path
# ---------------------------------------------------------------------------------------------


def place(
    account: Account,
    market: Instrument,
    side: str = "buy",
    quantity: str = "1",
    *,
    client_order_id: str | None = None,
    **fields: object,
) -> Order:
    """Place an order on `market` through the order service, as the API does: a limit order
    unless `fields` say otherwise (`price`, `type`, `time_in_force`…), under a fresh client
    order id unless one is given. It is pending until the matcher applies it: see `settled`."""
    from trading.services import order_place

    return order_place(
        account=account,
        symbol=market.symbol,
        client_order_id=client_order_id or f"o{next(_client_order_ids)}",
        side=side,
        quantity=quantity,
        **fields,
    )


def settled(order: Order, timeout_s: float = 20.0) -> Order:
    """Wait until the matcher has taken the order out of PENDING_NEW; return it fresh."""
    from trading.models import Order

    def check() -> Order | None:
        fresh = Order.objects.get(pk=order.pk)
        return None if fresh.status == Order.Status.PENDING_NEW else fresh

    return wait_for(check, timeout_s, f"order {order.pk} to leave pending_new")  # type: ignore[return-value]


def snapshot() -> tuple:
    """A fingerprint of orders, outbox and balances, to prove that a refused call changed
    nothing on the order path."""
    from accounts.models import Balance
    from trading.models import Order, Outbox

    return (
        Order.objects.count(),
        Outbox.objects.count(),
        sorted(Balance.objects.values_list("account_id", "asset_id", "available", "held")),
    )


def client_for(account: Account, *, csrf: bool = False) -> Client:
    """A test client logged in as the account's user (CSRF checks only if `csrf`)."""
    from django.test import Client

    client = Client(enforce_csrf_checks=csrf)
    client.force_login(account.user)
    return client


def post(client: Client, url: str, body: object) -> tuple[int, dict]:
    """POST `body` (JSON-encoded unless bytes) to a JSON endpoint: (status, decoded answer)."""
    raw = body if isinstance(body, bytes) else json.dumps(body)
    response = client.post(url, raw, content_type="application/json")
    return response.status_code, response.json()


# ---------------------------------------------------------------------------------------------
# The ledger
# ---------------------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh idempotency key."""
    return f"test-{uuid.uuid4()}"


def balance_of(account: Account, asset: Asset) -> tuple[Decimal, Decimal, Decimal]:
    """(available, held, pending) of the account in the asset."""
    from accounts import selectors

    row = selectors.balance_get(account=account, asset=asset)
    return row.available, row.held, row.pending


def ledger_state() -> tuple:
    """A fingerprint of every ledger table, to prove that a refused call changed nothing."""
    from accounts.models import Balance, IdempotencyKey, JournalEntry, Posting

    return (
        list(JournalEntry.objects.order_by("pk").values_list()),
        list(Posting.objects.order_by("pk").values_list()),
        list(
            Balance.objects.order_by("pk").values_list(
                "account_id", "asset_id", "available", "held", "pending"
            )
        ),
        list(IdempotencyKey.objects.order_by("pk").values_list()),
    )


def assert_ledger_sound() -> None:
    """The ledger's own check finds nothing wrong."""
    from accounts import selectors

    breaks = selectors.ledger_verify()
    assert breaks == [], "\n".join(map(str, breaks))


# ---------------------------------------------------------------------------------------------
# Kafka and the price stream
# ---------------------------------------------------------------------------------------------


def read_topic(name: str, idle_s: float = 1.5) -> list:
    """Every record of a topic, partition by partition in offset order."""
    from kafka import TopicPartition

    from tredye import kafka

    consumer = kafka.consumer(auto_offset_reset="earliest", max_poll_records=5000)
    physical = kafka.topic(name)
    partitions = [
        TopicPartition(physical, p) for p in sorted(consumer.partitions_for_topic(physical))
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: dict[int, list] = defaultdict(list)
    quiet = time.monotonic()
    while time.monotonic() - quiet < idle_s:
        batch = consumer.poll(timeout_ms=100)
        for tp, items in batch.items():
            records[tp.partition].extend(items)
            quiet = time.monotonic()
    consumer.close()
    return [record for p in sorted(records) for record in records[p]]


def tick(symbol: str, seq: int, last: Decimal) -> bytes:
    """A ticks-topic record of `symbol` trading at `last` (spread 0.02, open 100.00)."""
    from marketdata.feed import Quote
    from marketdata.services import tick_record

    quote = Quote(
        symbol=symbol,
        bid=last - Decimal("0.01"),
        ask=last + Decimal("0.01"),
        last=last,
        bid_size=Decimal("10"),
        ask_size=Decimal("12"),
        open=Decimal("100.00"),
    )
    return tick_record(quote, seq=seq)


# ---------------------------------------------------------------------------------------------
# The stream's flushes (what the stream worker publishes and every web process's hub reads)
# ---------------------------------------------------------------------------------------------


def _texts(messages: dict[str, dict | str]) -> dict[str, str]:
    return {
        key: message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
        for key, message in messages.items()
    }


async def publish_flush(messages: dict[str, dict | str], *, redis_url: str | None = None) -> None:
    """Publish one flush as the stream worker does (key -> message, or its JSON text)."""
    import redis.asyncio as aioredis
    from django.conf import settings

    from marketdata.broadcast import flush_payload
    from marketdata.channels import pubsub_channel

    client = aioredis.from_url(redis_url or settings.REDIS_URL)
    try:
        await client.publish(pubsub_channel(), flush_payload(_texts(messages)))
    finally:
        await client.aclose()


class FlushReader:
    """Read the stream worker's flushes from Redis, as a web process's hub does."""

    def __init__(self) -> None:
        import redis
        from django.conf import settings

        from marketdata.channels import pubsub_channel

        self.client = redis.Redis.from_url(settings.REDIS_URL)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(pubsub_channel())

    def collect(self, *, quiet_s: float, until: float | None = None) -> list[tuple[float, dict]]:
        """Messages (each with its arrival time) until none comes for `quiet_s`; the
        platform status, which travels the same way, is left out."""
        from marketdata.broadcast import payload_parse
        from marketdata.channels import STATUS_KEY

        received = []
        last = time.monotonic()
        while time.monotonic() - last < quiet_s and (until is None or time.monotonic() < until):
            message = self.pubsub.get_message(timeout=0.05)
            if message is None or message["type"] != "message":
                continue
            last = time.monotonic()
            _at, items = payload_parse(message["data"].decode())
            received += [(last, json.loads(t)) for k, t in items.items() if k != STATUS_KEY]
        return received

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()
