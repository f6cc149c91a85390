"""Soak the whole venue (not a test: it prints figures, it asserts nothing).

Starts everything `make run` starts — the rolling local broker, daphne, the stream worker, the
feed, the matcher, the relay, the market maker, Celery worker and beat — on a scratch database
of its own with the demo market, measures the venue at rest, then adds an accelerated trader
flow (marketable and resting orders and cancels, from threads calling `order_place` like web
requests do) until enough order commands have passed through the matcher or the time is up.
Then it waits for the order path to settle and prints:

- order commands applied (all accounts) and per second, orders placed by the traders,
  filled, refused; stuck orders (still pending, or commands never applied: must be 0);
- the largest consumer lag and the longest wait of a command that were seen, every degraded
  state reported, and how often the local broker was rolled;
- CPU per process (% of one core) at rest and under load, PostgreSQL backends included;
- whether `ledger_check`'s invariants hold at the end.

    .venv/bin/python bench/soak.py --commands 200000 [--minutes 120] [--trader-rate 150]

Uses the PostgreSQL and Redis of the settings (a scratch database and key prefixes of its
own) and a private rolling broker unless KAFKA_BOOTSTRAP_SERVERS names one.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

os.environ.setdefault("PGAPPNAME", "traders")
from benchlib import ROOT, cpu_seconds, daphne_command, database_url  # sets Django up
from django.conf import settings
from django.db import close_old_connections, connection, connections

from tredye.devbroker import free_port

D = Decimal
PROCESSES = ("web", "stream", "feed", "matcher", "relay", "maker", "worker", "beat")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def descendants(pid: int) -> set[int]:
    """A process and everything it started (the broker's Tansu, Celery's pool)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents[ppid].append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo += parents.get(current, [])
    return found


class CpuMeter:
    """CPU seconds per named process group, PostgreSQL backends grouped by application name.

    Every process seen keeps its last reading, so one that ended (a rolled broker, a closed
    backend) still counts up to its last sample: sample often (the load phase does, every
    10 s) and at most that much of an ended process is missed.
    """

    def __init__(self, groups: dict[str, int], db_name: str) -> None:
        self.groups = groups
        self.db_name = db_name
        self.seen: dict[int, tuple[str, float]] = {}

    def sample(self) -> dict[str, float]:
        for name, pid in self.groups.items():
            for child in descendants(pid):
                self._read(child, name)
        self._read(os.getpid(), "traders (this process)")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, application_name FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.db_name],
            )
            for pid, app in cursor.fetchall():
                self._read(pid, f"postgres ({app or 'other'})")
        totals: dict[str, float] = {}
        for name, seconds in self.seen.values():
            totals[name] = totals.get(name, 0.0) + seconds
        return totals

    def _read(self, pid: int, name: str) -> None:
        seconds = cpu_seconds(pid)
        if not math.isnan(seconds):
            self.seen[pid] = (name, seconds)


def usage(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """% of one core per group between two samples."""
    return {name: max(0.0, (after[name] - before.get(name, 0.0))) / seconds * 100 for name in after}


def print_cpu(title: str, figures: dict[str, float]) -> None:
    log(f"{title}: {sum(figures.values()):.0f}% of one core in all")
    for name, value in sorted(figures.items(), key=lambda item: -item[1]):
        if value >= 0.5:
            log(f"    {name:28} {value:6.1f}%")


class TraderFlow:
    """Threads placing marketable and resting orders and cancelling them, at a total rate."""

    def __init__(self, accounts: list, symbols: list[str], rate: float, threads: int) -> None:
        self.accounts = accounts
        self.symbols = symbols
        self.rate = rate
        self.threads_count = threads
        self.stop = threading.Event()
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads_count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _run(self, index: int) -> None:
        from trading.exceptions import TradingError
        from trading.models import Instrument
        from trading.selectors import reference_price
        from trading.services import order_cancel, order_place

        rng = random.Random(index)
        account = self.accounts[index % len(self.accounts)]
        instruments = {s: Instrument.objects.get(symbol=s) for s in self.symbols}
        resting: list[int] = []
        interval = self.threads_count / self.rate
        next_at = time.monotonic()
        number = 0
        while not self.stop.is_set():
            number += 1
            symbol = rng.choice(self.symbols)
            instrument = instruments[symbol]
            try:
                roll = rng.random()
                if roll < 0.1 and resting:
                    order_cancel(account=account, order_id=resting.pop(rng.randrange(len(resting))))
                    self._count("cancels")
                else:
                    reference = reference_price(instrument=instrument)
                    if reference is None:
                        continue
                    side = rng.choice(["buy", "sell"])
                    marketable = roll < 0.7
                    away = D("0.005") if marketable else D("-0.03")
                    factor = 1 + away if side == "buy" else 1 - away
                    tick = instrument.tick_size
                    price = (reference * factor / tick).to_integral_value(ROUND_DOWN) * tick
                    order = order_place(
                        account=account,
                        symbol=symbol,
                        client_order_id=f"soak-{index}-{number}",
                        side=side,
                        quantity=str(rng.randint(1, 5)),
                        price=price,
                        time_in_force="ioc" if marketable else "gtc",
                    )
                    self._count("placed")
                    if not marketable:
                        resting.append(order.pk)
                        if len(resting) > 50:
                            order_cancel(account=account, order_id=resting.pop(0))
                            self._count("cancels")
            except TradingError as error:
                self._count(f"refused ({getattr(error, 'code', type(error).__name__)})")
            except Exception as error:  # noqa: BLE001 - a soak reports, it does not stop
                self._count(f"error ({type(error).__name__})")
                close_old_connections()
                time.sleep(0.5)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            elif delay < -2:
                next_at = time.monotonic()


def applied_commands() -> int:
    from trading.models import Outbox

    return Outbox.objects.filter(topic="orders", applied_at__isnull=False).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000, help="stop after this many")
    parser.add_argument("--minutes", type=float, default=180, help="stop after this long")
    parser.add_argument("--trader-rate", type=float, default=150, help="orders/s in all")
    parser.add_argument("--traders", type=int, default=4, help="threads")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--roll-after-batches", type=int, default=10_000)
    parser.add_argument("--idle-only", action="store_true", help="measure the venue at rest only")
    parser.add_argument("--no-roll", action="store_true", help="a plain local broker, never rolled")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    processes: dict[str, subprocess.Popen] = {}
    db_name = None
    try:
        connection.settings_dict["TEST"]["NAME"] = f"soak_{os.getpid()}"
        log("creating and migrating the scratch database")
        db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        run(args, workdir, db_name, processes)
    finally:
        for process in processes.values():
            process.terminate()
        for name, process in processes.items():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                log(f"{name} ignored SIGTERM for 15 s: killed")
                process.kill()
                process.wait()
        connections.close_all()
        if db_name is not None:
            with connection.cursor() as cursor:  # the trader threads' connections
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    [db_name],
                )
            connections.close_all()
            connection.creation.destroy_test_db(db_name, verbosity=0)
        log(f"logs in {workdir}")


def run(args: argparse.Namespace, workdir: Path, db_name: str, processes: dict) -> None:
    from django.core.management import call_command

    from accounts import services as ledger
    from accounts.models import Asset
    from accounts.selectors import ledger_verify
    from trading.models import Instrument, Order
    from tredye import kafka

    prefix = f"soak{os.getpid()}."
    settings.KAFKA_TOPIC_PREFIX = prefix
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tredye.settings.local",
        "DJANGO_DEBUG": "false",
        "KAFKA_TOPIC_PREFIX": prefix,
        "CHANNEL_LAYER_PREFIX": prefix,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/3",
        "PYTHONUNBUFFERED": "1",
    }
    env["DATABASE_URL"] = database_url(db_name)

    def start(name: str, *command: str) -> None:
        log_file = (workdir / f"{name}.log").open("wb")
        processes[name] = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=env | {"PGAPPNAME": name},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    python = sys.executable
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        pass
    elif args.no_roll:
        from tredye.devbroker import Broker

        broker = Broker(free_port(), workdir)
        broker.start()
        processes["broker"] = broker.popen
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.address
        settings.KAFKA_BOOTSTRAP_SERVERS = [broker.address]
    else:
        port = free_port()
        start(
            "broker",
            python, "-m", "tredye.devbroker", "--port", str(port),
            "--log", str(workdir / "tansu.log"),
            "--roll-after-batches", str(args.roll_after_batches),
        )  # fmt: skip
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
        settings.KAFKA_BOOTSTRAP_SERVERS = [env["KAFKA_BOOTSTRAP_SERVERS"]]
        time.sleep(2)
    kafka.ensure_topics()
    log("loading the demo market")
    call_command("seed_demo", verbosity=0)
    manage = [python, str(ROOT / "manage.py")]
    web_port = free_port()
    start("web", *daphne_command(web_port))
    start("stream", *manage, "run_stream")
    start("feed", *manage, "run_feed")
    start("matcher", *manage, "run_matcher")
    start("relay", *manage, "run_outbox_relay")
    start("maker", *manage, "run_market_maker")
    start("worker", python, "-m", "celery", "-A", "tredye", "worker", "--loglevel=WARNING",
          "--concurrency=2")  # fmt: skip
    start("beat", python, "-m", "celery", "-A", "tredye", "beat", "--loglevel=WARNING",
          "--schedule", str(workdir / "celerybeat-schedule"))  # fmt: skip
    meter = CpuMeter({name: p.pid for name, p in processes.items()}, db_name)

    log("letting the venue settle for 20 s (maker quoting, feed running)")
    time.sleep(20)
    before = meter.sample()
    log(f"measuring the venue at rest for {args.idle_seconds:.0f} s")
    time.sleep(args.idle_seconds)
    print_cpu("at rest", usage(before, meter.sample(), args.idle_seconds))
    applied = applied_commands()
    log(f"order commands applied so far (the market maker's): {applied:,}")
    if args.idle_only:
        return

    # Traders: funded accounts trading the stocks against the market maker and each other.
    from trading.selectors import order_queue_age_s
    from tredye import status

    usd = Asset.objects.get(code="USD")
    symbols = [i.symbol for i in Instrument.objects.filter(lot_size=1, quote=usd)]
    from django.contrib.auth import get_user_model

    accounts = []
    for index in range(args.traders):
        user = get_user_model().objects.create_user(f"soak-{index}", password="x")  # noqa: S106
        account = ledger.account_open(user=user)
        funds = {usd: D("1000000000")} | {
            i.base: D("10000000") for i in Instrument.objects.filter(symbol__in=symbols)
        }
        for asset, amount in funds.items():
            ledger.deposit(
                account=account,
                asset=asset,
                amount=amount,
                reference="soak",
                idempotency_key=f"soak-{index}-{asset.code}",
            )
        accounts.append(account)
    flow = TraderFlow(accounts, symbols, args.trader_rate, args.traders)
    started = time.monotonic()
    first_applied = applied_commands()
    load_before = meter.sample()
    flow.start()
    log(f"trader flow started: {args.trader_rate:g} orders/s on {', '.join(symbols)}")
    worst_lag, worst_queue, degraded_seen = 0, 0.0, Counter()
    last_applied, last_at = first_applied, started
    deadline = started + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(10)
        close_old_connections()
        meter.sample()  # keeps the readings of processes that end before the next one
        now = time.monotonic()
        applied = applied_commands()
        reports = status.worker_reports()
        lags = {name: r.get("lag") or 0 for name, r in reports.items()}
        worst_lag = max([worst_lag, *lags.values()])
        queue = order_queue_age_s() or 0.0
        worst_queue = max(worst_queue, queue)
        platform = status.platform_status()
        for part in platform["degraded"]:
            degraded_seen[f"{part['part']} {part['state']}"] += 1
        dead = [name for name, p in processes.items() if p.poll() is not None]
        log(
            f"{applied:,} commands applied ({(applied - last_applied) / (now - last_at):.0f}/s), "
            f"traders {dict(flow.counts)}, lag {lags}, oldest queued {queue:.1f}s, "
            f"degraded {[p['part'] + ' ' + p['state'] for p in platform['degraded']]}"
            + (f", EXITED {dead}" if dead else "")
        )
        last_applied, last_at = applied, now
        if applied >= args.commands:
            break
    load_seconds = time.monotonic() - started
    load_cpu = usage(load_before, meter.sample(), load_seconds)
    flow.join()
    log("trader flow stopped; waiting up to 120 s for the order path to settle")
    close_old_connections()

    def stuck() -> tuple[int, int]:
        from trading.models import Outbox

        return (
            Order.objects.filter(status=Order.Status.PENDING_NEW).count(),
            Outbox.objects.filter(topic="orders", applied_at__isnull=True).count(),
        )

    settle_deadline = time.monotonic() + 120
    while any(stuck()) and time.monotonic() < settle_deadline:
        time.sleep(2)
    pending, unapplied = stuck()
    applied = applied_commands()
    roller_log = workdir / "broker.log"
    rolls = roller_log.read_text().count("ROLLING") if roller_log.exists() else 0
    trader_orders = Order.objects.filter(account__in=accounts)
    log("=" * 78)
    log(f"load phase: {load_seconds / 60:.1f} min")
    log(
        f"order commands applied: {applied:,} in all, {applied - first_applied:,} under load "
        f"({(applied - first_applied) / load_seconds:.0f}/s)"
    )
    log(
        f"trader orders: {trader_orders.count():,} placed, "
        f"{trader_orders.filter(status=Order.Status.FILLED).count():,} filled, "
        f"{trader_orders.filter(status=Order.Status.CANCELED).count():,} canceled; "
        f"refusals and errors: "
        f"{ {k: v for k, v in flow.counts.items() if k not in ('placed', 'cancels')} }"
    )
    log(f"stuck: {pending} orders pending_new, {unapplied} commands never applied")
    log(f"largest consumer lag seen: {worst_lag:,} records")
    log(f"longest wait of a command for the matcher: {worst_queue:.1f}s")
    log(f"degraded states seen (samples): {dict(degraded_seen) or 'none'}")
    log(f"local broker rolls: {rolls}")
    exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    log(f"processes that exited: {exited or 'none'}")
    print_cpu("under load", load_cpu)
    problems = ledger_verify()
    log(f"ledger_check: {'all invariants hold' if not problems else problems[:5]}")


if __name__ == "__main__":
    main()
