"""Benchmark `manage.py reconcile` on a venue of 100,000 trades (prints figures, asserts nothing).

Seeds a scratch database through the real order path: trader processes call `order_place` on
a few instruments while the real outbox relay and matcher run, until the matcher has made
`--trades` trades; so the ledger, positions, orders, book states, event streams and the
`trades` topic are what the venue itself writes. Then, with the relay and matcher still
running (the books' digests need the matcher), runs `manage.py reconcile` `--runs` times as
its own process and prints each run's wall time, the median, and the time of each check.

    .venv/bin/python bench/reconcile.py [--trades 100000] [--runs 3] [--traders 4]

Uses the PostgreSQL server of the settings with a scratch database of its own (created,
migrated and dropped), and a private Tansu broker unless KAFKA_BOOTSTRAP_SERVERS names one.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, D, bench_market, database_url, log, scratch_venue  # sets Django up
from django.conf import settings
from django.db import connection, connections

from tredye import kafka

SYMBOLS = ("RCNA", "RCNB", "RCNC", "RCND")


def trader_main(index: int, account_ids: list[int], symbol: str, db: str, stop) -> None:  # noqa: ANN001
    """Place orders around 100.00 on `symbol` from two accounts in turn (buys a little above,
    sells a little below the middle: about half cross) until `stop` is set."""
    settings.DATABASES["default"]["NAME"] = db
    connections.close_all()
    from accounts.models import Account
    from trading.exceptions import OrderRejected
    from trading.services import order_place

    accounts = list(Account.objects.filter(pk__in=account_ids))
    rng = random.Random(index)
    number = 0
    while not stop.is_set():
        number += 1
        side = rng.choice(["buy", "sell"])
        offset = rng.randint(-3, 6) if side == "buy" else -rng.randint(-3, 6)
        try:
            order_place(
                account=accounts[number % len(accounts)],
                symbol=symbol,
                client_order_id=f"r{index}-{number}",
                side=side,
                quantity=str(rng.randint(1, 4)),
                price=f"{D(10000 + offset) / 100:.2f}",
            )
        except OrderRejected:
            continue  # e.g. funds held by resting orders: the next one may pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--traders", type=int, default=4)
    args = parser.parse_args()
    with scratch_venue("reconcile") as venue:
        run(args, venue.workdir, venue.db_name, venue.processes)


def run(args: argparse.Namespace, workdir: Path, db_name: str, processes: list) -> None:
    from trading.models import Order, Outbox, ReconciliationRun, Trade

    markets = [
        bench_market(symbol=symbol, traders=2, base_amount="100000000") for symbol in SYMBOLS
    ]
    kafka.ensure_topics()
    env = os.environ | {
        "DATABASE_URL": database_url(db_name),
        "KAFKA_BOOTSTRAP_SERVERS": settings.KAFKA_BOOTSTRAP_SERVERS[0],
        "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
        "DATABASE_CONN_MAX_AGE": "600",
    }
    for name in ("run_outbox_relay", "run_matcher"):
        log_file = (workdir / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), name],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        )
    time.sleep(5)  # the matcher and relay start up

    log(f"seeding {args.trades:,} trades through the order path ({args.traders} traders)")
    context = multiprocessing.get_context("fork")
    connections.close_all()
    connection.close_pool()
    stop = context.Event()
    traders = [
        context.Process(
            target=trader_main,
            args=(
                index,
                [account.pk for account in markets[index % len(markets)][1]],
                SYMBOLS[index % len(SYMBOLS)],
                db_name,
                stop,
            ),
        )
        for index in range(args.traders)
    ]
    started = time.monotonic()
    for process in traders:
        process.start()
    last_log = 0.0
    while True:
        time.sleep(1)
        made = Trade.objects.count()
        if time.monotonic() - last_log >= 15:
            last_log = time.monotonic()
            log(f"  {made:,} trades after {time.monotonic() - started:.0f} s")
        if made >= args.trades:
            break
    stop.set()
    for process in traders:
        process.join()
    # Let the matcher apply what is queued and the relay send every trade.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (
            not Order.objects.filter(status=Order.Status.PENDING_NEW).exists()
            and not Outbox.objects.filter(sent_at__isnull=True).exists()
        ):
            break
        time.sleep(0.5)
    trades = Trade.objects.count()
    log(
        f"seeded in {time.monotonic() - started:.0f} s: {trades:,} trades, "
        f"{Order.objects.count():,} orders, {Outbox.objects.count():,} outbox rows"
    )

    command = [sys.executable, str(ROOT / "manage.py"), "reconcile"]
    log(f"timing: {' '.join(['manage.py', *command[2:]])} (whole process), {args.runs} runs")
    walls = []
    checks: dict[str, list[float]] = {}
    for number in range(1, args.runs + 1):
        begin = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - begin
        walls.append(wall)
        for name, seconds in re.findall(r"^(.+): done in ([\d.]+) s$", result.stderr, re.M):
            checks.setdefault(name, []).append(float(seconds))
        status = {0: "clean", 1: "BREAKS"}.get(result.returncode, f"exit {result.returncode}")
        log(f"  run {number}: {wall:5.1f} s  ({status})")
        if result.returncode != 0:
            log(result.stdout[-3000:] + result.stderr[-3000:])
    log(f"manage.py reconcile on {trades:,} trades: median {statistics.median(walls):.1f} s")
    for name, seconds in checks.items():
        log(f"  {name:28s} median {statistics.median(seconds):5.2f} s")
    last = ReconciliationRun.objects.order_by("-pk").values_list("report", flat=True).first()
    log(f"last report:\n{last}")


if __name__ == "__main__":
    main()
