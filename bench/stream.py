"""Benchmark the market-data path (not a test: it prints figures, it asserts nothing).

1. Throughput: ticks per second that the stream worker consumes from Kafka (decoding,
   validating, conflating and flushing to Redis as in production), median of several runs.
2. Latency: from a tick's produce time to its arrival at a WebSocket client, through the
   real daphne and stream worker processes, with 100 clients subscribed to every symbol.

    .venv/bin/python bench/stream.py [--ticks 100000] [--clients 100] [--rates 20 50 100 200]

Uses PostgreSQL and Redis from the settings (DATABASE_URL, REDIS_URL) and a private Tansu
broker, unless KAFKA_BOOTSTRAP_SERVERS names one. Topics and keys get a prefix of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from benchlib import ROOT, daphne_command, log, percentile  # sets Django up
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from marketdata.feed import Quote  # noqa: E402
from marketdata.services import tick_record  # noqa: E402
from marketdata.stream import StreamWorker  # noqa: E402
from tredye import kafka  # noqa: E402
from tredye.devbroker import Broker, free_port  # noqa: E402


def tick_value(symbol: str, seq: int, price: Decimal) -> bytes:
    quote = Quote(
        symbol=symbol,
        bid=price - Decimal("0.01"),
        ask=price + Decimal("0.01"),
        last=price,
        bid_size=Decimal("100"),
        ask_size=Decimal("100"),
        open=Decimal("100.00"),
    )
    return tick_record(quote, seq=seq)


class EarliestStreamWorker(StreamWorker):
    """The production worker, reading from the start so a preloaded topic can be timed."""

    start_at = "earliest"


def throughput_run(symbols: list[str], ticks: int, run: int) -> float:
    settings.KAFKA_TOPIC_PREFIX = f"bench{os.getpid()}r{run}."
    kafka.ensure_topics([kafka.TICKS, kafka.DEAD_LETTER])
    producer = kafka.producer(linger_ms=20, batch_size=256 * 1024)
    topic = kafka.topic(kafka.TICKS)
    price = Decimal("100.00")
    for i in range(ticks):
        symbol = symbols[i % len(symbols)]
        producer.send(topic, key=symbol.encode(), value=tick_value(symbol, i, price))
    producer.flush()
    producer.close()
    worker = EarliestStreamWorker(flush_interval_ms=16, stale_after_s=5)
    thread = threading.Thread(target=worker.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    while worker.consumed < ticks:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop()
    thread.join(10)
    return ticks / elapsed


async def latency_run(
    base_url: str, symbols: list[str], clients: int, rate: float, seconds: float
) -> dict:
    import websockets

    latencies: list[float] = []
    frames = 0
    ready = 0
    all_ready = asyncio.Event()
    ws_url = base_url.replace("http", "ws") + "/ws/stream/"

    sockets = []

    async def client() -> None:
        nonlocal frames, ready
        async with websockets.connect(ws_url, origin=base_url, max_queue=None) as socket:
            sockets.append(socket)
            await socket.send(
                json.dumps({"op": "subscribe", "channels": [f"ticker.{s}" for s in symbols]})
            )
            subscribed = False
            async for raw in socket:
                now_ms = time.time() * 1000
                message = json.loads(raw)
                if "batch" in message:
                    if all_ready.is_set():
                        frames += 1
                        latencies.extend(now_ms - item["ts"] for item in message["batch"])
                elif message.get("op") == "subscribed" and not subscribed:
                    subscribed = True
                    ready += 1
                    if ready == clients:
                        all_ready.set()
                elif message.get("op") == "heartbeat":
                    await socket.send('{"op":"heartbeat"}')

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.wait_for(all_ready.wait(), 60)
    await asyncio.sleep(1)
    latencies.clear()
    producer = kafka.producer(linger_ms=0)
    topic = kafka.topic(kafka.TICKS)
    interval = 1 / rate
    sent = 0
    started = time.monotonic()
    price = Decimal("100.00")
    while time.monotonic() - started < seconds:
        symbol = symbols[sent % len(symbols)]
        price += Decimal("0.01")
        producer.send(topic, key=symbol.encode(), value=tick_value(symbol, sent, price))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent * interval - time.monotonic()))
    producer.flush()
    await asyncio.sleep(1)
    for socket in sockets:
        await socket.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    producer.close()
    return {"sent": sent, "frames": frames, "latencies": latencies}


def wait_until_serving(url: str, process: subprocess.Popen, workdir: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daphne exited; see {workdir / 'processes.log'}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own local server
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"daphne did not start; see {workdir / 'processes.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[20.0, 50.0, 100.0, 200.0],
        help="tick rates (ticks/s over all symbols) of the latency runs",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tredye-bench-"))
    broker = None
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        broker = Broker(free_port(), workdir)
        broker.start()
        settings.KAFKA_BOOTSTRAP_SERVERS = [broker.address]
    log(
        f"broker {settings.KAFKA_BOOTSTRAP_SERVERS[0]}; database "
        f"{settings.DATABASES['default']['NAME']}; redis {settings.REDIS_URL}"
    )
    call_command("migrate", verbosity=0)
    call_command("seed_demo", verbosity=0)
    from marketdata.selectors import active_symbols

    symbols = sorted(active_symbols())
    processes: list[subprocess.Popen] = []
    try:
        log(f"\n[1/2] stream worker throughput: {args.ticks} ticks over {len(symbols)} symbols")
        rates = []
        for run in range(args.runs):
            rates.append(throughput_run(symbols, args.ticks, run))
            log(f"  run {run + 1}: {rates[-1]:,.0f} ticks/s")
        log(f"  median: {statistics.median(rates):,.0f} ticks/s consumed from Kafka")

        log(
            f"\n[2/2] produce -> WebSocket latency: {args.clients} clients, each subscribed to "
            f"all {len(symbols)} symbols, {args.seconds:g}s per tick rate"
        )
        settings.KAFKA_TOPIC_PREFIX = f"bench{os.getpid()}lat."
        kafka.ensure_topics()
        env = os.environ | {
            "KAFKA_BOOTSTRAP_SERVERS": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
            "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
            "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
            "DJANGO_DEBUG": "false",
            # every bench client connects from 127.0.0.1: the per-address socket limit off
            "WS_MAX_SOCKETS_PER_IP": "0",
        }
        port = free_port()
        with (workdir / "processes.log").open("ab") as out:
            processes.append(
                subprocess.Popen(
                    daphne_command(port),
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=out,
                )
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "run_stream"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=out,
                )
            )
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", processes[0], workdir)
        log(
            f"  {'ticks/s':>8} {'delivered':>10} {'frames/s/client':>16} "
            f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
        )
        for rate in args.rates:
            result = asyncio.run(
                latency_run(f"http://127.0.0.1:{port}", symbols, args.clients, rate, args.seconds)
            )
            latencies = result["latencies"]
            if not latencies:
                log(f"  {rate:8g}: nothing arrived; see {workdir / 'processes.log'}")
                continue
            per_client = result["frames"] / args.clients / args.seconds
            log(
                f"  {rate:8g} {len(latencies):10,} {per_client:16.1f} "
                f"{percentile(latencies, 0.5):8.0f} {percentile(latencies, 0.9):8.0f} "
                f"{percentile(latencies, 0.99):8.0f}"
            )
        log("  (latency = client receive time - tick produce time, whole milliseconds)")
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        if broker:
            broker.kill()


if __name__ == "__main__":
    main()
