"""Benchmark order placement over HTTP (not a test: it prints figures, it asserts nothing).

Several clients, each a thread with a keep-alive connection and an account of its own, place
limit orders that rest (buys far below any market) through POST /trading/api/orders/ on a real
daphne; then, for comparison, read GET /trading/api/positions/ and GET /healthz the same way.
Prints p50/p90/p99 latency and requests/s of each, and the most PostgreSQL connections the web
process held.

    .venv/bin/python bench/http_orders.py [--clients 4] [--seconds 10] [--no-pool]

`--no-pool` runs the web process without the connection pool (DATABASE_POOL=false, so a
connection per request thread kept DATABASE_CONN_MAX_AGE seconds), for a before/after. Uses the
PostgreSQL server of the settings with a scratch database of its own (created, migrated and
dropped). No broker is needed: placement ends at the outbox, which nothing relays here.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

# This process only sets up the scratch database; the web process under test has its pool.
os.environ["DATABASE_POOL"] = "false"

from benchlib import (  # noqa: E402 - sets Django up
    ROOT,
    bench_market,
    daphne_command,
    database_url,
    log,
    percentile,
)
from django.db import connection, connections  # noqa: E402

from tredye.devbroker import free_port  # noqa: E402

D = Decimal

PERCENTILES = ("p50 ms", "p90 ms", "p99 ms")


class Client:
    """One keep-alive HTTP connection, logged in as one trader (session and CSRF cookies)."""

    def __init__(self, port: int, session_key: str, csrf: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {
            "Cookie": f"sessionid={session_key}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "Content-Type": "application/json",
        }

    def call(self, method: str, path: str, body: bytes | None = None) -> int:
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.conn.close()


def run_phase(
    name: str, clients: list[Client], seconds: float, request: callable
) -> dict[str, object]:
    """Every client calls `request(client, index, n)` in a loop for `seconds`; time each call."""
    latencies: list[list[float]] = [[] for _ in clients]
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(len(clients) + 1)
    deadline = [0.0]

    def loop(index: int) -> None:
        client = clients[index]
        start.wait()
        n = 0
        while time.monotonic() < deadline[0]:
            n += 1
            began = time.perf_counter()
            status = request(client, index, n)
            latencies[index].append((time.perf_counter() - began) * 1000)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    every = [ms for per_client in latencies for ms in per_client]
    return {
        "name": name,
        "count": len(every),
        "rate": len(every) / took,
        "p50": percentile(every, 0.5),
        "p90": percentile(every, 0.9),
        "p99": percentile(every, 0.99),
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--no-pool", action="store_true", help="the web process without a pool")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-orders-"))
    db_name = None
    daphne = None
    try:
        connection.settings_dict["TEST"]["NAME"] = f"bench_http_orders_{os.getpid()}"
        db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        daphne = run(args, workdir, db_name)
    finally:
        if daphne is not None:
            daphne.terminate()
            try:
                daphne.wait(10)
            except subprocess.TimeoutExpired:
                daphne.kill()
                daphne.wait()
        connections.close_all()
        if db_name is not None:
            connection.creation.destroy_test_db(db_name, verbosity=0)


def run(args: argparse.Namespace, workdir: Path, db_name: str) -> subprocess.Popen:
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils.crypto import get_random_string

    instrument, accounts = bench_market(symbol="HTTP", traders=args.clients)
    logins = []
    for account in accounts:
        user = account.user
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        logins.append((session.session_key, get_random_string(32)))

    port = free_port()
    env = os.environ | {
        "DATABASE_URL": database_url(db_name),
        "DATABASE_POOL": "false" if args.no_pool else "true",
        "PGAPPNAME": "web",
        # what placement costs, not how the per-account limit refuses (429s are cheap)
        "ORDER_RATE_LIMIT_PER_S": "0",
        "LOG_LEVEL": "WARNING",
    }
    log_file = (workdir / "daphne.log").open("wb")
    daphne = subprocess.Popen(
        daphne_command(port),
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):  # noqa: S310
                break
        except OSError:
            if time.monotonic() > deadline or daphne.poll() is not None:
                raise RuntimeError(f"daphne did not start: see {workdir / 'daphne.log'}") from None
            time.sleep(0.1)

    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'web'",
                    [db_name],
                )
                peak[0] = max(peak[0], cursor.fetchone()[0])
            time.sleep(0.05)
        connection.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    clients = [Client(port, key, csrf) for key, csrf in logins]

    def place(client: Client, index: int, n: int) -> int:
        body = {
            "symbol": instrument.symbol,
            "client_order_id": f"h{index}-{n}",
            "side": "buy",
            "quantity": "1",
            "price": "1.00",  # far below any market: it rests
        }
        return client.call("POST", "/trading/api/orders/", json.dumps(body).encode())

    def positions(client: Client, index: int, n: int) -> int:
        return client.call("GET", "/trading/api/positions/")

    def healthz(client: Client, index: int, n: int) -> int:
        return client.call("GET", "/healthz")

    mode = "without a pool (DATABASE_POOL=false)" if args.no_pool else "with the pool"
    log(f"daphne {mode}; {args.clients} clients, {args.seconds:.0f}s per endpoint")
    run_phase("warm-up", clients, 1.0, place)
    results = [
        run_phase("POST /trading/api/orders/", clients, args.seconds, place),
        run_phase("GET /trading/api/positions/", clients, args.seconds, positions),
        run_phase("GET /healthz", clients, args.seconds, healthz),
    ]
    sampling.set()
    sampler.join(5)
    for client in clients:
        client.close()
    header = f"{'endpoint':30s} {'requests/s':>10s}" + "".join(f"{q:>9s}" for q in PERCENTILES)
    log(f"{header}  statuses")
    for result in results:
        log(
            f"{result['name']:30s} {result['rate']:10.0f} {result['p50']:9.1f} "
            f"{result['p90']:9.1f} {result['p99']:9.1f}  {result['statuses']}"
        )
    log(f"most PostgreSQL connections held by the web process: {peak[0]}")
    return daphne


if __name__ == "__main__":
    main()
