"""PostgreSQL under strain or away: the web process answers 2xx or a clean 503, never 500, and
holds a bounded number of connections; workers back off and carry on.

Each test starts its own daphne (or workers) as child processes with the settings under test,
and names their connections (PGAPPNAME) to count or terminate them in `pg_stat_activity`.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.http import HttpResponse
from django.test import Client, override_settings
from django.utils.crypto import get_random_string

from marketdata.models import PriceModel
from testing.factories import make_price_model
from testing.helpers import manage, terminate_backends, wait_for, wait_for_http
from trading.models import Order, Outbox
from tredye import kafka
from tredye.devbroker import free_port

D = Decimal
POOL_MAX = 4


# --- helpers ---------------------------------------------------------------------------------


def backends(application_name: str | None = None) -> int:
    """Connections to the test database (but this one), or only those of one process."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND (%s::text IS NULL OR application_name = %s)",
            [application_name, application_name],
        )
        return cursor.fetchone()[0]


def start_daphne(start_test_process, name: str, env: dict[str, str]) -> tuple[str, int]:
    port = free_port()
    process = start_test_process(
        name,
        sys.executable,
        "-m",
        "daphne",
        # Room for a burst of connections in the listen queue (Twisted's default is 50).
        "-e",
        f"tcp:port={port}:interface=127.0.0.1:backlog=512",
        "tredye.asgi:application",
        env={"PGAPPNAME": name} | env,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", 30, process.popen)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{process.output()}") from error
    return "127.0.0.1", port, process


def pooled(**overrides: str) -> dict[str, str]:
    """The web process as deployed: the pool on, sized small so its bound is visible."""
    return {
        "DATABASE_POOL": "true",
        "DATABASE_POOL_MIN_SIZE": "1",
        "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
        "DATABASE_POOL_TIMEOUT": "20",
        # bursts from one account: the per-account order-entry limit is off here (it has its
        # own test in trading/tests/test_hostile_input.py)
        "ORDER_RATE_LIMIT_PER_S": "0",
    } | overrides


class Trader:
    """An HTTP client logged in as a funded trader (session and CSRF cookies)."""

    def __init__(self, host: str, port: int, user) -> None:  # noqa: ANN001
        client = Client()
        client.force_login(user)
        self.host, self.port = host, port
        self.csrf = get_random_string(32)
        self.cookie = f"sessionid={client.cookies['sessionid'].value}; csrftoken={self.csrf}"

    def request(
        self, method: str, path: str, body: dict | None = None, timeout: float = 60
    ) -> tuple[int, dict | str, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = {"Cookie": self.cookie, "X-CSRFToken": self.csrf}
            payload = None
            if body is not None:
                payload = json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read().decode()
            kind = response.getheader("Content-Type") or ""
            parsed = json.loads(raw) if kind.startswith("application/json") else raw
            return response.status, parsed, dict(response.getheaders())
        finally:
            conn.close()

    def place(self, symbol: str, number: str) -> tuple[int, dict | str, dict]:
        # A buy far below any market: it rests, and holds 1.00 plus fees.
        return self.request(
            "POST",
            "/trading/api/orders/",
            {
                "symbol": symbol,
                "client_order_id": number,
                "side": "buy",
                "quantity": "1",
                "price": "1.00",
            },
        )


@pytest.fixture
def funded(make_instrument, make_account):
    market = make_instrument()
    return market, make_account(funds={market.quote: "100000"})


# --- the web process -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_orders_is_answered_with_bounded_connections(start_test_process, funded):
    # given: a pooled daphne and one funded account
    market, account = funded
    host, port, daphne = start_daphne(start_test_process, "burst-web", pooled())
    client = Trader(host, port, account.user)
    peak = {"web": 0, "all": 0}
    sampling = threading.Event()

    def sample() -> None:
        dsn = settings.DATABASES["default"]
        with psycopg.connect(
            host=dsn["HOST"], port=dsn["PORT"], user=dsn["USER"], dbname=dsn["NAME"]
        ) as watcher:
            while not sampling.is_set():
                web, every = watcher.execute(
                    "SELECT count(*) FILTER (WHERE application_name = 'burst-web'), count(*) "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
                peak["web"] = max(peak["web"], web)
                peak["all"] = max(peak["all"], every)
                time.sleep(0.01)

    # Other clients of the test database: this test's connection, a session's daphne, ...
    others = backends() - backends("burst-web")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = threading.Barrier(300)

    def one(number: int) -> int:
        start.wait()
        return client.place(market.symbol, f"burst-{number}")[0]

    # when: 300 order POSTs at once
    try:
        with ThreadPoolExecutor(max_workers=300) as pool:
            statuses = list(pool.map(one, range(300)))
        time.sleep(0.5)
    finally:
        sampling.set()
        sampler.join(5)

    # then: every order is answered and placed; the web process never held more than its pool
    assert sorted(set(statuses)) == [201], {s: statuses.count(s) for s in set(statuses)}
    assert Order.objects.filter(account=account).count() == 300
    assert peak["web"] <= POOL_MAX, peak
    # and the database saw no more than that plus the clients it had before (and the sampler)
    assert peak["all"] <= POOL_MAX + others + 1, (peak, others)
    assert backends("burst-web") <= POOL_MAX
    assert daphne.popen.poll() is None


@pytest.mark.django_db(transaction=True)
def test_terminated_backends_give_503_never_500_and_the_web_recovers(start_test_process, funded):
    # given: a pooled daphne, and traders placing orders and reading positions
    market, account = funded
    host, port, daphne = start_daphne(start_test_process, "fault-web", pooled())
    client = Trader(host, port, account.user)
    stop = threading.Event()
    answers: list[tuple[int, object]] = []

    def flow(worker: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            status, body, _ = client.place(market.symbol, f"flow-{worker}-{number}")
            answers.append((status, body))
            status, body, _ = client.request("GET", "/trading/api/positions/")
            answers.append((status, body))

    threads = [threading.Thread(target=flow, args=(index,), daemon=True) for index in range(6)]
    for thread in threads:
        thread.start()
    # when: the web process's connections are terminated again and again while requests flow
    terminated = 0
    try:
        time.sleep(1.0)
        for _ in range(8):
            terminated += terminate_backends("fault-web")
            time.sleep(0.4)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    # then: every answer is a success or a clean 503 with the JSON error
    assert terminated >= 1
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 201, 503}, {s: [b for c, b in answers if c == s][:1] for s in statuses}
    for status, body in answers:
        if status == 503:
            assert body["error"]["code"] == "database_unavailable"
    # and: it serves again without a restart
    assert client.place(market.symbol, "after-1")[0] == 201
    assert client.request("GET", "/trading/api/positions/")[0] == 200
    assert daphne.popen.poll() is None


@pytest.mark.django_db(transaction=True)
def test_no_database_answers_a_fast_503_json_for_the_api_and_html_for_pages(start_test_process):
    # given: a daphne whose PostgreSQL is not there
    nowhere = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    host, port, daphne = start_daphne(
        start_test_process,
        "nodb-web",
        pooled(DATABASE_URL=nowhere, DATABASE_POOL_TIMEOUT="2", DATABASE_CONNECT_TIMEOUT="1"),
    )

    def get(path: str, **headers: str) -> tuple[int, str, dict, float]:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        started = time.monotonic()
        conn.request("GET", path, headers={"Cookie": "sessionid=" + "x" * 32} | headers)
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        return response.status, body, dict(response.getheaders()), time.monotonic() - started

    # when / then: the API says so in its JSON error shape, quickly
    status, body, headers, took = get("/trading/api/positions/")
    assert status == 503, body
    assert json.loads(body)["error"]["code"] == "database_unavailable"
    assert int(headers["Retry-After"]) > 0
    assert took < 10
    # a page gets a small HTML page; a client that asks for JSON gets JSON
    status, body, headers, _ = get("/")
    assert status == 503
    assert headers["Content-Type"].startswith("text/html")
    assert "Retry-After" in headers
    status, body, _, _ = get("/", Accept="application/json")
    assert status == 503
    assert json.loads(body)["error"]["code"] == "database_unavailable"
    assert "database unavailable: GET /trading/api/positions/" in daphne.output()
    assert "Internal Server Error" not in daphne.output()


class FailingMiddleware:
    """Stands for a middleware that reaches the database after the view (a session save)."""

    def __init__(self, get_response) -> None:  # noqa: ANN001
        self.get_response = get_response

    def __call__(self, request) -> HttpResponse:  # noqa: ANN001
        self.get_response(request)
        raise OperationalError("terminating connection due to administrator command")


@pytest.mark.django_db
def test_a_database_error_in_another_middleware_is_a_503_too():
    middleware = [
        "tredye.middleware.DatabaseUnavailableMiddleware",
        "tredye.tests.test_database_faults.FailingMiddleware",
    ]
    with override_settings(MIDDLEWARE=middleware):
        response = Client(raise_request_exception=False).get("/trading/api/positions/")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"]


# --- workers ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_feed_and_the_market_maker_outlive_terminated_connections(
    order_path, start_test_process, make_instrument, make_account
):
    # given: an instrument with a price model, a funded maker, the feed and the maker running
    market = make_instrument()
    model = make_price_model(
        market, price="100.00", volatility="2.0", spread_bps=2, typical_size="10"
    )
    bot = make_account(
        f"mm-{uuid.uuid4().hex[:8]}", funds={market.quote: "1000000", market.base: "1000"}
    )
    user = bot.user
    # As deployed: a worker keeps its connection between batches.
    deployed = {"KAFKA_TOPIC_PREFIX": order_path, "LOG_LEVEL": "INFO", "TEST_CONN_MAX_AGE": "600"}
    feed_name, maker_name = f"feed-{uuid.uuid4().hex[:6]}", f"maker-{uuid.uuid4().hex[:6]}"
    feed = start_test_process(
        "feed",
        *manage("run_feed", "--rate", "20", "--symbols", market.symbol, "--time-scale", "6000"),
        env=deployed | {"PGAPPNAME": feed_name},
    )
    maker = start_test_process(
        "maker",
        *manage("run_market_maker", "--username", user.username, "--symbols", market.symbol),
        env=deployed
        | {
            "PGAPPNAME": maker_name,
            "MARKET_MAKER_REFRESH_MS": "200",
            "MARKET_MAKER_REQUOTE_BPS": "1",
        },
    )

    def quoting_since(moment: float) -> bool:
        # Only the maker sends orders here: a place, replace or cancel after `moment`.
        return Outbox.objects.filter(topic="orders", created_at__gt=_aware(moment)).exists()

    wait_for(lambda: quoting_since(0), 40, "the maker's first quotes")
    wait_for(lambda: backends(feed_name) and backends(maker_name), 20, "both connected")

    # when: their connections are terminated a few times, each time after they reconnected
    for _ in range(3):
        wait_for(lambda: backends(feed_name) and backends(maker_name), 20, "a reconnection")
        assert terminate_backends(feed_name) + terminate_backends(maker_name) >= 2
        time.sleep(2.5)  # the feed saves prices every 2 s; the maker checks every 0.2 s

    # then: both are alive, the feed saves prices and publishes ticks the maker quotes on
    after = time.time()
    PriceModel.objects.filter(pk=model.pk).update(last_price=None)
    wait_for(
        lambda: PriceModel.objects.get(pk=model.pk).last_price is not None,
        20,
        "the feed to save prices again",
    )
    wait_for(lambda: quoting_since(after), 30, "the maker to quote again")
    assert feed.popen.poll() is None, feed.output()
    assert maker.popen.poll() is None, maker.output()
    assert "database error" in feed.output()
    with override_settings(KAFKA_TOPIC_PREFIX=order_path):
        assert kafka.topic(kafka.TICKS).startswith(order_path)


def _aware(epoch: float):  # noqa: ANN202
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)
