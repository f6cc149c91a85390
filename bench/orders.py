"""Benchmark the order path end to end (not a test: it prints figures, it asserts nothing).

Concurrent traders call `order_place` (each in a process of its own, like web workers) while
the real outbox relay and matcher run as child processes. Prints orders/s accepted, fills/s
committed, and p50/p99 latency from placement to: order_place returning (funds held, order
queued), the matcher's first event for the order on `account-events` (accepted into the book),
and the `filled` event on `account-events`.

    .venv/bin/python bench/orders.py [--traders 4] [--seconds 20] [--rate 0]

Uses the PostgreSQL server of the settings with a scratch database of its own (created,
migrated and dropped), and a private Tansu broker unless KAFKA_BOOTSTRAP_SERVERS names one.
`--rate` caps each trader's orders per second (0: as fast as it can).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from benchlib import (  # sets Django up
    ROOT,
    bench_market,
    cpu_seconds,
    database_url,
    log,
    percentile,
    scratch_venue,
)
from django.conf import settings
from django.db import connection, connections
from kafka import TopicPartition

from tredye import kafka
from tredye.devbroker import Broker

D = Decimal


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat), for the total."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def postgres_pids(db_name: str) -> dict[int, str]:
    """The database's backends (but this one), each with the role its client gave (PGAPPNAME)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [db_name],
        )
        return {pid: name or "other" for pid, name in cursor.fetchall()}


def stage_latencies() -> dict[str, tuple[float, float]]:
    """p50/p99 of each hop of a placement, from the rows' own timestamps."""
    hops = {
        "placed → produced to orders (relay)": "o.sent_at - o.created_at",
        "produced → matcher batch started": "r.accepted_at - o.sent_at",
    }
    found = {}
    with connection.cursor() as cursor:
        for name, interval in hops.items():
            cursor.execute(
                f"""
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
                  FROM (SELECT EXTRACT(EPOCH FROM {interval}) * 1000 AS ms
                          FROM trading_outbox o
                          JOIN trading_order r ON r.id = (o.data->>'order_id')::bigint
                         WHERE o.topic = 'orders' AND o.type = 'order.place'
                           AND o.sent_at IS NOT NULL AND r.accepted_at IS NOT NULL) AS hop
                """  # noqa: S608 - fixed expressions above
            )
            found[name] = cursor.fetchone()
    return {name: (float(p50 or "nan"), float(p99 or "nan")) for name, (p50, p99) in found.items()}


def trader_main(
    index: int, account_id: int, symbol: str, seconds: float, rate: float, db: str, out: str
) -> None:
    """One trader process: place orders around 100.00 as fast as allowed; write timings."""
    settings.DATABASES["default"]["NAME"] = db
    os.environ["PGAPPNAME"] = "trader"  # names this process's backend for the CPU breakdown
    connections.close_all()
    from accounts.models import Account
    from trading.services import order_place

    account = Account.objects.get(pk=account_id)
    rng = random.Random(index)
    deadline = time.time() + seconds
    rows = []
    number = 0
    while time.time() < deadline:
        number += 1
        side = rng.choice(["buy", "sell"])
        # Buys a little above and sells a little below the middle: about half cross.
        offset = rng.randint(-5, 10) if side == "buy" else -rng.randint(-5, 10)
        started = time.time()
        order = order_place(
            account=account,
            symbol=symbol,
            client_order_id=f"b{index}-{number}",
            side=side,
            quantity=str(rng.randint(1, 10)),
            price=f"{D(10000 + offset) / 100:.2f}",
        )
        rows.append(f"{order.pk} {started} {time.time()}\n")
        if rate:
            time.sleep(max(0.0, started + 1 / rate - time.time()))
    Path(out).write_text("".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traders", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=0)
    args = parser.parse_args()
    with scratch_venue("orders") as venue:
        run(args, venue.workdir, venue.db_name, venue.processes, venue.broker)


def run(
    args: argparse.Namespace, workdir: Path, db_name: str, processes: list, broker: Broker | None
) -> None:
    from django.db.models import Count, Max, Min

    from trading.models import Order, Trade

    instrument, accounts = bench_market(symbol="BNCH", traders=args.traders, base_amount="10000000")
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
                env=env | {"PGAPPNAME": name.removeprefix("run_").replace("_", " ")},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        )

    # Watch account-events for each order's first matcher event and its filled event.
    first_seen: dict[int, float] = {}
    filled_seen: dict[int, float] = {}
    stop = threading.Event()

    def watch() -> None:
        consumer = kafka.consumer(auto_offset_reset="earliest")
        physical = kafka.topic(kafka.ACCOUNT_EVENTS)
        partitions = [
            TopicPartition(physical, p) for p in sorted(consumer.partitions_for_topic(physical))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                now = time.time()
                for record in records:
                    for order in kafka.decode(record.value).data["orders"]:
                        first_seen.setdefault(order["id"], now)
                        if order["status"] == "filled":
                            filled_seen.setdefault(order["id"], now)
        consumer.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(6)  # the matcher and relay start up
    log(
        f"{args.traders} traders for {args.seconds:.0f}s"
        + (f" at most {args.rate:.0f}/s each" if args.rate else "")
    )
    context = multiprocessing.get_context("fork")
    connections.close_all()
    # A forked trader must not inherit the pool's connections (their sockets stay the
    # parent's) nor its threads (they do not survive a fork): each trader opens its own.
    connection.close_pool()
    outputs = [workdir / f"trader{index}.txt" for index in range(args.traders)]
    started = time.time()
    traders = [
        context.Process(
            target=trader_main,
            args=(
                index,
                accounts[index].pk,
                instrument.symbol,
                args.seconds,
                args.rate,
                db_name,
                str(outputs[index]),
            ),
        )
        for index in range(args.traders)
    ]
    children_before = os.times()
    named = {"matcher": processes[1].pid, "relay": processes[0].pid}
    if broker is not None:
        named["kafka broker"] = broker.popen.pid
    cpu_before = {name: cpu_seconds(pid) for name, pid in named.items()}
    self_before = os.times()
    machine_before = machine_busy_seconds()
    for process in traders:
        process.start()
    time.sleep(min(2.0, args.seconds / 2))
    # The traders' and workers' PostgreSQL backends, seen while they are connected.
    backends = postgres_pids(db_name)
    connections.close_all()
    backend_cpu = {pid: cpu_seconds(pid) for pid in backends}
    # A trader's backend exits with it: keep the last CPU figure seen of each.
    backend_last = dict(backend_cpu)
    while any(process.is_alive() for process in traders):
        for pid in backend_cpu:
            seen = cpu_seconds(pid)
            if seen == seen:
                backend_last[pid] = seen
        time.sleep(0.1)
    for process in traders:
        process.join()
    placed_for = time.time() - started
    children_after = os.times()
    machine = machine_busy_seconds() - machine_before
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in named.items()}
    for role in sorted(set(backends.values())):
        used = [
            backend_last[pid] - before
            for pid, before in backend_cpu.items()
            if backends[pid] == role and backend_last[pid] == backend_last[pid]  # skip NaN
        ]
        cpu[f"postgres for {role} (from 2 s in)"] = sum(used)
    cpu["traders"] = (children_after.children_user + children_after.children_system) - (
        children_before.children_user + children_before.children_system
    )
    cpu["bench (event watcher)"] = (children_after.user + children_after.system) - (
        self_before.user + self_before.system
    )
    placements: dict[int, tuple[float, float]] = {}
    for output in outputs:
        for line in output.read_text().splitlines():
            order_id, begin, end = line.split()
            placements[int(order_id)] = (float(begin), float(end))
    # Let the matcher catch up.
    deadline = time.time() + 60
    while time.time() < deadline:
        if not Order.objects.filter(status=Order.Status.PENDING_NEW).exists():
            break
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    watcher.join(5)
    trades = Trade.objects.count()
    span = Order.objects.aggregate(
        accepted=Count("accepted_at"), first=Min("created_at"), last=Max("accepted_at")
    )
    end_to_end = (span["last"] - span["first"]).total_seconds() if span["accepted"] else 0.0
    stages = stage_latencies()
    last_trade = Trade.objects.order_by("-executed_at").values_list("executed_at", flat=True)[:1]
    first_trade = Trade.objects.order_by("executed_at").values_list("executed_at", flat=True)[:1]
    trade_span = (last_trade[0] - first_trade[0]).total_seconds() if trades > 1 else float("nan")
    commit_latency = [(end - begin) * 1000 for begin, end in placements.values()]
    accept_latency = [
        (first_seen[oid] - begin) * 1000
        for oid, (begin, _) in placements.items()
        if oid in first_seen
    ]
    fill_latency = [
        (filled_seen[oid] - begin) * 1000
        for oid, (begin, _) in placements.items()
        if oid in filled_seen
    ]
    # An order whose first event already says filled was filled on arrival (a taker); the
    # others rested in the book until a later order reached them.
    taker_fill_latency = [
        (filled_seen[oid] - begin) * 1000
        for oid, (begin, _) in placements.items()
        if oid in filled_seen and filled_seen[oid] == first_seen.get(oid)
    ]
    log(
        f"orders placed:    {len(placements)} in {placed_for:.1f}s = "
        f"{len(placements) / placed_for:.0f} orders/s (order_place returned: funds held)"
    )
    log(
        f"end to end:       {span['accepted']} accepted by the matcher, first placement to last "
        f"acceptance {end_to_end:.1f}s = {span['accepted'] / end_to_end:.0f} orders/s accepted"
    )
    log(
        f"fills committed:  {trades} trades in {trade_span:.1f}s = "
        f"{trades / trade_span:.0f} fills/s "
        f"({2 * trades / trade_span:.0f} order fills/s)"
    )
    log(f"CPU seconds while the traders ran ({os.cpu_count()} CPUs, {placed_for:.1f}s wall):")
    for name, seconds in cpu.items():
        log(f"  {name:34s} {seconds:6.1f} s  = {seconds * 1000 / len(placements):5.2f} ms/order")
    log(
        f"  {'whole machine (everything busy)':34s} {machine:6.1f} s  = "
        f"{machine * 1000 / len(placements):5.2f} ms/order"
    )
    log("where the time goes (p50 / p99 ms, from PostgreSQL timestamps):")
    for name, (p50, p99) in stages.items():
        log(f"  {name:44s} {p50:7.1f}   {p99:7.1f}")
    for name, values in (
        ("placement → order_place returned", commit_latency),
        ("placement → matcher event (accepted)", accept_latency),
        ("placement → filled event on topic", fill_latency),
        ("  of orders filled on arrival", taker_fill_latency),
    ):
        log(
            f"{name:40s} p50 {percentile(values, 0.5):7.1f} ms   p99 "
            f"{percentile(values, 0.99):7.1f} ms   (n={len(values)})"
        )


if __name__ == "__main__":
    main()
