"""Benchmark the trading screen's rendering in Chromium (not a test: it prints figures).

A real daphne serves `/trade/SYMBOL/`; this script publishes the stream worker's flushes
itself, straight to Redis, at `--rate` book and trade updates a second: every flush
(`--flush-ms`) carries one book update of several levels and a few trades, chained as the
worker chains them. The page applies and draws them once per animation frame and times each
frame's work (the numbers its beacon reports); this prints their median, p90, p99 and max,
and how many updates reached the page.

    .venv/bin/python bench/render.py [--rate 1000] [--seconds 20] [--flush-ms 16]

Uses the settings' PostgreSQL (a scratch database of its own) and Redis, no Kafka.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from decimal import Decimal

from benchlib import (  # sets Django up
    ROOT,
    daphne_command,
    database_url,
    drop_scratch_database,
    log,
    percentile,
)
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

LEVELS_PER_UPDATE = 7  # book levels changed per flush; the rest of each flush's updates are trades
DEPTH = 20
TICK = Decimal("0.01")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="book and trade updates a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flush-ms", type=int, default=16, help="the stream worker's beat")
    args = parser.parse_args()
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    db_name = f"bench_render_{os.getpid()}"
    prefix = f"benchrender{os.getpid()}."
    maintenance = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{db_name}"')
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tredye.settings.local",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url(db_name),
        "KAFKA_TOPIC_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
    }
    daphne = None
    try:
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
        symbol = "BENCH"
        script = (
            "from testing.factories import make_instrument;"
            f"make_instrument({symbol!r}, price='100.00')"
        )
        subprocess.run([*manage, "shell", "-c", script], env=env, check=True, cwd=ROOT)
        from tredye.devbroker import free_port

        port = free_port()
        daphne = subprocess.Popen(  # noqa: S603 - our own server
            daphne_command(port), env=env, cwd=ROOT, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/healthz", daphne)
        run(args, url, symbol, prefix, chromium)
    finally:
        if daphne is not None:
            daphne.terminate()
            daphne.wait(20)
        drop_scratch_database(db_name, maintenance)


def _wait_http(url: str, process: subprocess.Popen, timeout_s: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("daphne exited")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - localhost
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


class Feed:
    """The stream worker's flushes for one symbol: a book of DEPTH levels a side moving
    around 100.00, and trades, each chained on the one before."""

    def __init__(self, symbol: str) -> None:
        from marketdata.stream_state import ASK, BID, BookMirror

        self.symbol = symbol
        self.rng = random.Random(7)
        self.sides = (BID, ASK)
        levels = {}
        for i in range(1, DEPTH + 1):
            levels[(BID, Decimal(100) - i * TICK)] = Decimal(self.rng.randint(1, 50))
            levels[(ASK, Decimal(100) + i * TICK)] = Decimal(self.rng.randint(1, 50))
        self.book = BookMirror(1, levels)
        self.trade_seq = 0

    def snapshot(self) -> dict[str, str]:
        from marketdata.stream_state import encode, levels_data, stream_message

        bids, asks = self.book.top()
        return {
            f"book.{self.symbol}": encode(
                stream_message(
                    f"book.{self.symbol}",
                    type="snapshot",
                    seq=self.book.seq,
                    ts=_now_ms(),
                    depth=100,
                    data=levels_data(bids, asks),
                )
            ),
            f"trades.{self.symbol}": encode(
                stream_message(
                    f"trades.{self.symbol}", type="snapshot", seq=0, ts=None, data={"trades": []}
                )
            ),
        }

    def flush(self, trades: int) -> dict[str, str]:
        from marketdata.stream_state import ASK, BID, encode, levels_data, stream_message

        changes = {}
        for _ in range(LEVELS_PER_UPDATE):
            side = self.rng.choice(self.sides)
            offset = self.rng.randint(1, DEPTH) * TICK
            price = Decimal(100) - offset if side == BID else Decimal(100) + offset
            changes[(side, price)] = Decimal(self.rng.randint(0, 60))
        prev = self.book.seq
        self.book.apply(changes)
        self.book.seq += 1
        ts = _now_ms()
        bids = sorted(((p, q) for (s, p), q in changes.items() if s == BID), reverse=True)
        asks = sorted((p, q) for (s, p), q in changes.items() if s == ASK)
        messages = {
            f"book.{self.symbol}": encode(
                stream_message(
                    f"book.{self.symbol}",
                    type="update",
                    seq=self.book.seq,
                    prev_seq=prev,
                    ts=ts,
                    depth=100,
                    data=levels_data(bids, asks),
                )
            )
        }
        if trades:
            first = self.trade_seq
            batch = []
            for _ in range(trades):
                self.trade_seq += 1
                batch.append(
                    {
                        "seq": self.trade_seq,
                        "price": f"{Decimal(100) + self.rng.randint(-5, 5) * TICK:f}",
                        "quantity": str(self.rng.randint(1, 9)),
                        "aggressor": self.rng.choice(["buy", "sell"]),
                        "ts": ts,
                    }
                )
            messages[f"trades.{self.symbol}"] = encode(
                stream_message(
                    f"trades.{self.symbol}",
                    type="update",
                    seq=self.trade_seq,
                    prev_seq=first,
                    ts=ts,
                    data={"trades": batch},
                )
            )
        return messages


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(args: argparse.Namespace, url: str, symbol: str, prefix: str, chromium: str) -> None:
    import redis
    from playwright.sync_api import sync_playwright

    from marketdata.broadcast import flush_payload

    client = redis.Redis.from_url(settings.REDIS_URL)
    channel = f"{prefix}stream"
    snapshot_key = f"{prefix}snapshot"
    feed = Feed(symbol)
    client.hset(snapshot_key, mapping=feed.snapshot())
    flushes_per_s = 1000 / args.flush_ms
    per_flush = args.rate / flushes_per_s
    trades_per_flush = max(0.0, per_flush - LEVELS_PER_UPDATE)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{url}/trade/{symbol}/")
        page.wait_for_function(
            "s => window.tredyeMarket?.channel(`book.${s}`)?.status === 'live'", arg=symbol
        )
        page.evaluate("() => { window.tredyeFrames.length = 0; }")
        log(
            f"streaming {args.rate} updates/s ({LEVELS_PER_UPDATE} book levels and "
            f"{trades_per_flush:.1f} trades per flush, a flush every {args.flush_ms} ms) "
            f"for {args.seconds:g} s"
        )
        sent = 0
        owed = 0.0
        started = time.monotonic()
        next_at = started
        while time.monotonic() - started < args.seconds:
            owed += trades_per_flush
            trades = int(owed)
            owed -= trades
            # The page loaded its snapshots before the stream started: updates only now.
            client.publish(channel, flush_payload(feed.flush(trades)))
            sent += LEVELS_PER_UPDATE + trades
            next_at += args.flush_ms / 1000
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        frames = page.evaluate("() => window.tredyeFrames.slice()")
        seq = page.evaluate("s => window.tredyeMarket.channel(`book.${s}`).seq", symbol)
        gaps = page.evaluate("s => window.tredyeMarket.channel(`book.${s}`).gaps ?? 0", symbol)
        browser.close()
    client.delete(snapshot_key)
    client.close()
    drawn = f"{len(frames)} frames drawn ({len(frames) / elapsed:.0f}/s)"
    log(
        f"sent {sent / elapsed:,.0f} updates/s; the page's book reached delta {seq} of "
        f"{feed.book.seq} (gaps {gaps}); {drawn}"
    )
    if frames:
        log(
            f"frame render time  median {percentile(frames, 0.5):.2f} ms   "
            f"p90 {percentile(frames, 0.9):.2f} ms   p99 {percentile(frames, 0.99):.2f} ms   "
            f"max {max(frames):.2f} ms"
        )


if __name__ == "__main__":
    main()
