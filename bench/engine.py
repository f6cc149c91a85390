"""Benchmark the matching engine: replay a seeded random command mix on one book.

    python bench/engine.py [--commands N] [--seed S] [--repeats R] [--profile] [--no-latency]

The mix is 60% limit, 25% cancel, 10% market or IOC, 5% other (replace, stop / stop-limit,
FOK, post-only). Limit prices sit in a band around a mean-reverting random-walk mid price, so
the book keeps a realistic shape (a few hundred levels at most). Commands are generated
before any timing, by driving a shadow book so that cancels and replaces target live orders.

Throughput is measured on whole runs without per-command timing (median over the repeats),
both by the wall clock and by this process's CPU time (which a busy, shared machine disturbs
less); latency percentiles come from a separate run timing every command with perf_counter_ns.

Instructions per command, which unlike the clock a shared machine does not disturb: run
``--repeats 1 --no-latency`` and ``--repeats 0 --no-latency`` (generation only) under
``PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no`` and divide the difference of
the two instruction counts by ``--commands``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trading.engine import (  # noqa: E402  (the path must be set up first)
    Canceled,
    Expired,
    Order,
    OrderBook,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)

SUBMIT = 0
CANCEL = 1
REPLACE = 2

Command = tuple[int, Any, Any, Any]

ACCOUNTS = 200
BAND = 60  # limit prices lie within this many ticks of the mid price
CENTRE = 10_000
DRIFT = 150  # the mid price stays within CENTRE +- DRIFT


class _LiveSet:
    """Live order ids with O(1) add, remove and uniform random choice."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.index: dict[int, int] = {}

    def add(self, order_id: int) -> None:
        if order_id not in self.index:
            self.index[order_id] = len(self.ids)
            self.ids.append(order_id)

    def discard(self, order_id: int) -> None:
        position = self.index.pop(order_id, None)
        if position is None:
            return
        last = self.ids.pop()
        if last != order_id:
            self.ids[position] = last
            self.index[last] = position

    def choice(self, rng: random.Random) -> int | None:
        return self.ids[int(rng.random() * len(self.ids))] if self.ids else None

    def __len__(self) -> int:
        return len(self.ids)


def generate(count: int, seed: int) -> tuple[list[Command], dict[str, int]]:
    """Return ``count`` commands and some statistics about the book they produce."""
    rng = random.Random(seed)
    shadow = OrderBook("BENCH")
    live = _LiveSet()
    commands: list[Command] = []
    mid = CENTRE
    next_id = 1
    max_levels = 0
    max_live = 0
    trades = 0
    buy, sell = Side.BUY, Side.SELL
    limit, market = OrderType.LIMIT, OrderType.MARKET
    stop, stop_limit = OrderType.STOP, OrderType.STOP_LIMIT
    gtc, ioc, fok, day = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY

    def passive_price(side: Side) -> int:
        # Mostly behind the mid, sometimes through it (a marketable limit).
        offset = min(int(rng.expovariate(1 / 10)) - 2, BAND)
        return max(1, mid - offset if side is buy else mid + offset)

    def size() -> int:
        return rng.randint(1, 100)

    def taker_size() -> int:
        # Takers are larger than single resting orders (which makers slice), so liquidity
        # taken balances liquidity added and the book stays stationary (a few thousand orders).
        return rng.randint(1, 200)

    for ts in range(count):
        # Mean-reverting random walk of the reference mid price.
        if rng.random() < 0.02:
            mid += 1 if rng.random() < 0.5 - (mid - CENTRE) / (4 * DRIFT) else -1
        side = buy if rng.random() < 0.5 else sell
        account = 1 + int(rng.random() * ACCOUNTS)
        roll = rng.random()
        other = rng.random()
        target = live.choice(rng)
        command: Command
        if roll < 0.60:  # limit
            tif = day if rng.random() < 0.1 else gtc
            order = Order(next_id, account, side, limit, size(), passive_price(side), tif=tif)
            command = (SUBMIT, order, ts, None)
        elif roll < 0.85:  # cancel: a live order, now and then one that is not
            if target is None or rng.random() < 0.03:
                target = next_id + 10**9
            partial = rng.randint(1, 50) if rng.random() < 0.15 else None
            command = (CANCEL, target, partial, ts)
        elif roll < 0.95:  # market or IOC
            if rng.random() < 0.5:
                order = Order(next_id, account, side, market, taker_size())
            else:
                price = mid + (5 if side is buy else -5)
                order = Order(next_id, account, side, limit, taker_size(), price, tif=ioc)
            command = (SUBMIT, order, ts, None)
        elif other < 0.4 and target is not None:  # replace
            view = shadow.get(target)
            assert view is not None
            new_price = None if view.pending else passive_price(view.side)
            command = (REPLACE, target, size(), new_price)
        elif other < 0.6:  # stop or stop-limit
            gap = rng.randint(1, 30)
            trigger = mid + gap if side is buy else max(1, mid - gap)
            if rng.random() < 0.5:
                order = Order(next_id, account, side, stop, size(), stop_price=trigger)
            else:
                price = trigger + (3 if side is buy else -3)
                order = Order(next_id, account, side, stop_limit, size(), price, stop_price=trigger)
            command = (SUBMIT, order, ts, None)
        elif other < 0.8:  # fill or kill
            price = mid + (3 if side is buy else -3)
            order = Order(next_id, account, side, limit, taker_size(), price, tif=fok)
            command = (SUBMIT, order, ts, None)
        else:  # post-only
            order = Order(
                next_id, account, side, limit, size(), passive_price(side), post_only=True
            )
            command = (SUBMIT, order, ts, None)
        if command[0] == SUBMIT:
            next_id += 1
        commands.append(command)
        events = _apply(shadow, command)
        # Track which orders are live, to aim cancels and replaces at them.
        touched = []
        for event in events:
            cls = type(event)
            if cls is Trade:
                if not event.maker_remaining:
                    live.discard(event.maker_order_id)
                trades += 1
            elif cls is Canceled or cls is Expired:
                if cls is Expired or not event.remaining:
                    live.discard(event.order_id)
            elif hasattr(event, "order_id"):
                touched.append(event.order_id)
        for order_id in touched:
            if order_id in shadow:
                live.add(order_id)
            else:
                live.discard(order_id)
        if ts % 1024 == 0:
            levels = len(shadow.depth()[0]) + len(shadow.depth()[1])
            max_levels = max(max_levels, levels)
            max_live = max(max_live, len(shadow))
    bids, asks = shadow.depth()
    stats = {
        "final_levels": len(bids) + len(asks),
        "max_levels": max_levels,
        "final_live_orders": len(shadow),
        "max_live_orders": max_live,
        "trades": trades,
    }
    return commands, stats


def _apply(book: OrderBook, command: Command) -> list[Any]:
    op, a, b, c = command
    if op == SUBMIT:
        return book.submit(a, b)
    if op == CANCEL:
        return book.cancel(a, b, c)
    return book.replace(a, b, c)


def run_throughput(commands: list[Command]) -> tuple[float, float]:
    """Replay ``commands`` on a fresh book; return the elapsed wall and CPU seconds."""
    book = OrderBook("BENCH")
    submit = book.submit
    cancel = book.cancel
    replace = book.replace
    cpu_start = time.process_time()
    start = time.perf_counter()
    for op, a, b, c in commands:
        if op == SUBMIT:
            submit(a, b)
        elif op == CANCEL:
            cancel(a, b, c)
        else:
            replace(a, b, c)
    return time.perf_counter() - start, time.process_time() - cpu_start


def run_latency(commands: list[Command]) -> list[int]:
    """Replay ``commands`` on a fresh book; return each command's nanoseconds."""
    book = OrderBook("BENCH")
    submit = book.submit
    cancel = book.cancel
    replace = book.replace
    clock: Callable[[], int] = time.perf_counter_ns
    latencies = [0] * len(commands)
    for i, (op, a, b, c) in enumerate(commands):
        if op == SUBMIT:
            start = clock()
            submit(a, b)
            latencies[i] = clock() - start
        elif op == CANCEL:
            start = clock()
            cancel(a, b, c)
            latencies[i] = clock() - start
        else:
            start = clock()
            replace(a, b, c)
            latencies[i] = clock() - start
    return latencies


def _clock_overhead() -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(10_000):
        start = clock()
        samples.append(clock() - start)
    samples.sort()
    return samples[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one run instead")
    parser.add_argument(
        "--no-latency", action="store_true", help="skip the per-command latency run"
    )
    args = parser.parse_args()

    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}"
    )
    print(f"generating {args.commands:,} commands (seed {args.seed}) ...", flush=True)
    started = time.perf_counter()
    commands, stats = generate(args.commands, args.seed)
    print(
        f"  generated in {time.perf_counter() - started:.1f} s; "
        + ", ".join(f"{key} {value:,}" for key, value in stats.items())
    )
    counts = {"limit": 0, "cancel": 0, "market/ioc": 0, "other": 0}
    for op, a, _b, _c in commands:
        if op == CANCEL:
            counts["cancel"] += 1
        elif op == REPLACE:
            counts["other"] += 1
        elif a.type is OrderType.MARKET or a.tif is TimeInForce.IOC:
            counts["market/ioc"] += 1
        elif a.type is OrderType.LIMIT and a.tif is not TimeInForce.FOK and not a.post_only:
            counts["limit"] += 1
        else:
            counts["other"] += 1
    print(
        "  mix: " + ", ".join(f"{key} {value / len(commands):.1%}" for key, value in counts.items())
    )

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run_throughput(commands)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return

    gc.collect()
    gc.freeze()  # the generated commands are long-lived: keep the collector off them
    wall_rates: list[float] = []
    cpu_rates: list[float] = []
    for repeat in range(args.repeats):
        wall, cpu = run_throughput(commands)
        wall_rates.append(len(commands) / wall)
        cpu_rates.append(len(commands) / cpu)
        print(
            f"  run {repeat + 1}: {wall:.3f} s wall, {wall_rates[-1]:,.0f} commands/s; "
            f"{cpu:.3f} s CPU, {cpu_rates[-1]:,.0f} commands/CPU-s",
            flush=True,
        )
    if wall_rates:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"throughput: {statistics.median(wall_rates):,.0f} commands/s wall-clock "
            f"(median of {args.repeats}; best {max(wall_rates):,.0f}); "
            f"{statistics.median(cpu_rates):,.0f} commands per CPU-second "
            f"(median; best {max(cpu_rates):,.0f}); load average {load:.2f} "
            f"on {os.cpu_count()} CPUs"
        )
    if args.no_latency:
        return
    latencies = sorted(run_latency(commands))
    overhead = _clock_overhead()

    def percentile(fraction: float) -> int:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))]

    print(
        f"latency per command: p50 {percentile(0.50) / 1000:.2f} us, "
        f"p99 {percentile(0.99) / 1000:.2f} us, p99.9 {percentile(0.999) / 1000:.2f} us, "
        f"max {latencies[-1] / 1000:.1f} us (includes ~{overhead} ns timer overhead)"
    )


if __name__ == "__main__":
    main()
