"""Benchmark the market-data path (not a test: it prints figures, it asserts nothing).

Without a subcommand (as before):

1. Throughput: ticks per second that the stream worker consumes from Kafka (decoding,
   validating, conflating and flushing to Redis as in production), median of several runs.
2. Latency: from a tick's produce time to its arrival at a WebSocket client, through the
   real daphne and stream worker processes, with 100 clients subscribed to every symbol.

    .venv/bin/python bench/stream.py [--ticks 100000] [--clients 100] [--rates 20 50 100 200]

`fanout`: the socket fan-out with the whole venue running (the feed, the matcher, the market
maker, the outbox relay, the stream worker and a flow of orders), many clients each subscribed
to several channels of several symbols. Prints messages and frames delivered per second (all
clients), event-to-client latency (p50/p99/max, from each message's own `ts`, measured by a
sample of clients that parse every frame; the others only count frames and bytes), daphne's
CPU seconds per 1,000 frames sent (every daphne process, /proc), and the load generator's own
CPU, so one can see it was not the bottleneck.

    .venv/bin/python bench/stream.py fanout [--clients 500] [--symbols 5] [--seconds 30]
        [--orders-per-s 200] [--web-processes N] [--channels book,trades,ticker]
        [--server-root PATH]

`--server-root` runs the server side (daphne and the workers, the migrations, the demo data
and the order flow) from another checkout, e.g. a git worktree of an older commit, so two
fan-outs can be measured back to back with the same clients; a server that knows only
`ticker.*` channels needs `--channels ticker`. The clients run in processes of their own
(`bench/stream.py clients`, standard library only).

Uses PostgreSQL and Redis from the settings (DATABASE_URL, REDIS_URL; `fanout` makes a scratch
database of its own) and a private Tansu broker, unless KAFKA_BOOTSTRAP_SERVERS names one.
Topics and keys get a prefix of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import inspect
import json
import os
import queue
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

# The Django parts (benchlib sets Django up) are imported where they are used: the client
# processes of `fanout` import nothing of the project, so they stay light, and run whatever
# state the project's code is in.


# ---------------------------------------------------------------------------------------------
# 1 and 2: stream worker throughput, produce -> WebSocket latency (no subcommand)
# ---------------------------------------------------------------------------------------------


def tick_value(symbol: str, seq: int, price: Decimal) -> bytes:
    from marketdata.feed import Quote
    from marketdata.services import tick_record

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


def throughput_run(symbols: list[str], ticks: int, run: int) -> float:
    from django.conf import settings

    from marketdata.stream import StreamWorker
    from tredye import kafka

    class EarliestStreamWorker(StreamWorker):
        """The production worker, reading from the start so a preloaded topic can be timed."""

        start_at = "earliest"

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

    from tredye import kafka

    latencies: list[float] = []
    frames = 0
    ready = 0
    all_ready = asyncio.Event()
    ws_url = base_url.replace("http", "ws") + "/ws/stream/"

    sockets = []

    async def client() -> None:
        nonlocal frames, ready
        async with websockets.connect(ws_url, origin=base_url, max_queue=None) as websocket:
            sockets.append(websocket)
            await websocket.send(
                json.dumps({"op": "subscribe", "channels": [f"ticker.{s}" for s in symbols]})
            )
            subscribed = False
            async for raw in websocket:
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
                    await websocket.send('{"op":"heartbeat"}')

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
    for websocket in sockets:
        await websocket.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    producer.close()
    return {"sent": sent, "frames": frames, "latencies": latencies}


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daphne exited; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own local server
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"daphne did not start; see {log_path}")


def ticks_main(argv: list[str]) -> None:
    from benchlib import ROOT, daphne_command, log, percentile  # sets Django up
    from django.conf import settings
    from django.core.management import call_command

    from tredye import kafka
    from tredye.devbroker import Broker, free_port

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="`bench/stream.py fanout --help`: the fan-out with the whole venue running.",
    )
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
    args = parser.parse_args(argv)

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
        wait_until_serving(
            f"http://127.0.0.1:{port}/healthz", processes[0], workdir / "processes.log"
        )
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


# ---------------------------------------------------------------------------------------------
# `clients`: the load generator of `fanout` (a process of its own; standard library only)
# ---------------------------------------------------------------------------------------------


class Counts:
    """What every client of one generator process received since the window opened."""

    def __init__(self) -> None:
        self.measuring = False
        self.frames = 0
        self.bytes = 0
        self.messages = 0
        self.latencies: list[float] = []
        self.connected = 0
        self.subscribed = 0
        self.closed = 0
        self.errors: dict[str, int] = {}
        self.first_error = ""


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client-to-server frame (clients must mask theirs), FIN set; payloads < 64 KiB."""
    key = os.urandom(4)
    length = len(payload)
    header = bytes([0x80 | opcode])
    if length < 126:
        header += bytes([0x80 | length])
    else:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    return header + key + bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))


HEARTBEAT_ANSWER = masked_frame(b'{"op":"heartbeat"}')


class StreamClient:
    """One WebSocket client, reading frames off the TCP stream itself (RFC 6455).

    A counting client only finds frame boundaries: it counts frames, bytes and messages (the
    `"ch"` keys of a batch) without decoding anything but control messages, which are few. A
    sampling client parses every batch and records each message's latency from its `ts`.
    """

    def __init__(
        self, counts: Counts, connection: socket.socket, subscribe: bytes, *, sample: bool
    ) -> None:
        self.counts = counts
        self.connection = connection
        self.subscribe = subscribe
        self.sample = sample
        self.upgraded = False
        self.closed = False
        self.buffer = b""
        self.fragments: list[bytes] = []
        host = "{}:{}".format(*connection.getpeername()[:2])
        key = base64.b64encode(os.urandom(16)).decode()
        connection.sendall(
            (
                f"GET /ws/stream/ HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n\r\n"
            ).encode()
        )
        connection.setblocking(False)

    def write(self, data: bytes) -> None:
        """Send a small frame (a subscribe, a heartbeat's answer, a pong)."""
        with contextlib.suppress(OSError):
            self.connection.send(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.counts.closed += 1
            self.connection.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._error("handshake", buffer[:200].decode(errors="replace"))
                self.close()
                return
            self.upgraded = True
            self.counts.connected += 1
            self.write(masked_frame(self.subscribe))
            buffer = buffer[end + 4 :]
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            self._frame(first, buffer, start, end)
            position = end
        self.buffer = buffer[position:]

    def _frame(self, first: int, buffer: bytes, start: int, end: int) -> None:
        opcode = first & 0x0F
        if opcode in (0x0, 0x1, 0x2):
            if not first & 0x80:  # a fragment: kept until the last one
                self.fragments.append(buffer[start:end])
                return
            if self.fragments:
                buffer = b"".join([*self.fragments, buffer[start:end]])
                start, end = 0, len(buffer)
                self.fragments = []
            counts = self.counts
            if counts.measuring:
                counts.frames += 1
                counts.bytes += end - start
            if buffer.startswith(b'{"batch"', start):
                if self.sample:
                    now_ms = time.time() * 1000
                    batch = json.loads(buffer[start:end])["batch"]
                    if counts.measuring:
                        counts.messages += len(batch)
                        counts.latencies.extend(
                            now_ms - message["ts"]
                            for message in batch
                            if isinstance(message.get("ts"), int | float)
                        )
                elif counts.measuring:
                    counts.messages += buffer.count(b'"ch"', start, end)
            else:
                self._control(json.loads(buffer[start:end]))
        elif opcode == 0x8:
            self.close()
        elif opcode == 0x9:  # ping: answer pong with its payload
            self.write(masked_frame(buffer[start:end], opcode=0xA))

    def _control(self, message: dict) -> None:
        op = message.get("op")
        if op == "heartbeat":
            self.write(HEARTBEAT_ANSWER)
        elif op == "subscribed":
            self.counts.subscribed += 1
        elif op == "error":
            self._error(str(message.get("code")), json.dumps(message))

    def _error(self, code: str, detail: str) -> None:
        self.counts.errors[code] = self.counts.errors.get(code, 0) + 1
        self.counts.first_error = self.counts.first_error or detail


def clients_run(args: argparse.Namespace) -> None:
    """Connect, subscribe, say `ready`; count between `start` and `stop` on stdin; say what
    arrived as one JSON line; close at `quit` or the end of stdin.

    One epoll loop, not asyncio (less Python per read). Most of a generator's cost per frame
    is the kernel's (a read, and the ACK it sends: about 45 us on a 2-vCPU VM, four times the
    Python), so the counting clients are read every --drain-every-ms, several frames a read,
    while the sampled ones are read as soon as a frame arrives: their latencies are not
    delayed by the generator.
    """
    counts = Counts()
    subscribe = json.dumps(
        {"op": "subscribe", "channels": args.subscribe.split(","), "depth": args.depth},
        separators=(",", ":"),
    ).encode()
    poller = select.epoll()  # stdin and the sampled clients
    drained = select.epoll()  # the counting clients
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    next_drain = time.monotonic()
    clients: dict[int, StreamClient] = {}
    typed = b""
    next_connect = time.monotonic()
    ready_by: float | None = None
    started = time.monotonic()
    while True:
        now = time.monotonic()
        opened = len(clients) + counts.errors.get("connect", 0)
        if opened < args.count and now >= next_connect:
            try:
                connection = socket.create_connection((args.host, args.port), timeout=10)
            except OSError as error:
                counts.errors["connect"] = counts.errors.get("connect", 0) + 1
                counts.first_error = counts.first_error or str(error)
            else:
                client = StreamClient(
                    counts, connection, subscribe, sample=len(clients) < args.sample
                )
                clients[connection.fileno()] = client
                (poller if client.sample else drained).register(connection.fileno(), select.EPOLLIN)
            next_connect += 1 / args.connect_rate
        elif opened >= args.count and ready_by is None:
            ready_by = now + 60
        if ready_by is not None and ready_by != float("inf"):
            answered = counts.subscribed + counts.closed
            if counts.subscribed >= len(clients) or answered >= len(clients) or now > ready_by:
                ready_by = float("inf")
                print(json.dumps({"ready": True, "subscribed": counts.subscribed}), flush=True)
        timeout = max(0.0, min(next_drain, next_connect if opened < args.count else 1e9) - now)
        events = poller.poll(timeout)
        if time.monotonic() >= next_drain:
            events += drained.poll(0)
            next_drain = time.monotonic() + args.drain_every_ms / 1000
        commands: list[bytes] = []
        for fd, _events in events:
            if fd == stdin:
                data = os.read(stdin, 4096)
                typed += data if data else b"quit\n"
                *commands, typed = typed.split(b"\n")
                continue
            client = clients[fd]
            try:
                data = client.connection.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                client.data_received(data)
            else:
                client.close()
            if client.closed:  # closing its socket took it out of the epoll set
                del clients[fd]
        for command in commands:
            line = command.strip().decode()
            if line == "start":
                counts.frames = counts.bytes = counts.messages = counts.closed = 0
                counts.latencies = []
                counts.measuring = True
                started = time.monotonic()
            elif line == "stop":
                counts.measuring = False
                print(json.dumps(window_report(counts, started, args.sample)), flush=True)
            elif line == "quit":
                for client in clients.values():
                    client.close()
                return


def window_report(counts: Counts, started: float, sample: int) -> dict:
    """What arrived since `start`, as the JSON line a generator prints at `stop`."""
    latencies = sorted(counts.latencies)
    return {
        "seconds": time.monotonic() - started,
        "frames": counts.frames,
        "bytes": counts.bytes,
        "messages": counts.messages,
        "sample_clients": min(sample, counts.connected),
        "latency_count": len(latencies),
        "latency_ms": {
            str(q): latencies[min(len(latencies) - 1, int(q * len(latencies)))]
            for q in (0.5, 0.9, 0.99)
        }
        | {"max": latencies[-1]}
        if latencies
        else {},
        "closed_during_window": counts.closed,
        "connected": counts.connected,
        "subscribed": counts.subscribed,
        "errors": counts.errors,
        "first_error": counts.first_error,
    }


def clients_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description="The load generator of `fanout` (started by it; lines on stdin drive it)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sample", type=int, default=0, help="clients that parse every frame")
    parser.add_argument("--subscribe", required=True, help="channels, comma-separated")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--connect-rate", type=float, default=200.0, help="connections/s")
    parser.add_argument(
        "--drain-every-ms", type=float, default=50.0, help="how often counting clients read"
    )
    clients_run(parser.parse_args(argv))


# ---------------------------------------------------------------------------------------------
# `fanout`: the venue running, many clients, figures
# ---------------------------------------------------------------------------------------------


def order_flow(*, symbols: list[str], rate: float, threads: int) -> None:
    """Place marketable and resting orders, and cancel some, at `rate` a second in all on
    `symbols`, until stdin ends; then print what was done as one JSON line.

    Runs inside the server's checkout (`manage.py shell -c`, the source of this function), so
    it uses that checkout's services and schema: it imports everything itself.
    """
    import json
    import random
    import sys
    import threading
    import time
    from collections import Counter
    from decimal import ROUND_DOWN, Decimal

    from django.contrib.auth import get_user_model
    from django.db import close_old_connections, connections

    from accounts import services as ledger
    from accounts.models import Asset
    from trading.exceptions import TradingError
    from trading.models import Instrument
    from trading.selectors import reference_price
    from trading.services import order_cancel, order_place

    instruments = {i.symbol: i for i in Instrument.objects.filter(symbol__in=symbols)}
    usd = Asset.objects.get(code="USD")
    accounts = []
    for index in range(threads):
        user = get_user_model().objects.create_user(f"bench-flow-{index}", password=None)
        account = ledger.account_open(user=user)
        funds = {usd: Decimal("1000000000")} | {
            i.base: Decimal("10000000") for i in instruments.values()
        }
        for asset, amount in funds.items():
            ledger.deposit(
                account=account,
                asset=asset,
                amount=amount,
                reference="bench",
                idempotency_key=f"bench-flow-{index}-{asset.code}",
            )
        accounts.append(account)
    stop = threading.Event()
    counts: Counter = Counter()
    lock = threading.Lock()

    def count(key: str) -> None:
        with lock:
            counts[key] += 1

    def trade(index: int) -> None:
        rng = random.Random(index)
        account = accounts[index]
        resting: list[int] = []
        interval = threads / rate
        next_at = time.monotonic()
        number = 0
        while not stop.is_set():
            number += 1
            instrument = instruments[rng.choice(symbols)]
            try:
                roll = rng.random()
                if roll < 0.1 and resting:
                    order_cancel(account=account, order_id=resting.pop(rng.randrange(len(resting))))
                    count("cancels")
                else:
                    reference = reference_price(instrument=instrument)
                    if reference is None:
                        count("no reference price yet")
                        stop.wait(0.1)
                        continue
                    side = rng.choice(["buy", "sell"])
                    marketable = roll < 0.7
                    away = Decimal("0.005") if marketable else Decimal("-0.003")
                    factor = 1 + away if side == "buy" else 1 - away
                    tick = instrument.tick_size
                    price = (reference * factor / tick).to_integral_value(ROUND_DOWN) * tick
                    order = order_place(
                        account=account,
                        symbol=instrument.symbol,
                        client_order_id=f"bench-{index}-{number}",
                        side=side,
                        quantity=str(rng.randint(1, 5)),
                        price=price,
                        time_in_force="ioc" if marketable else "gtc",
                    )
                    count("placed")
                    if not marketable:
                        resting.append(order.pk)
                        if len(resting) > 50:
                            order_cancel(account=account, order_id=resting.pop(0))
                            count("cancels")
            except TradingError as error:
                count(f"refused ({getattr(error, 'code', type(error).__name__)})")
            except Exception as error:  # noqa: BLE001 - a bench reports, it does not stop
                count(f"error ({type(error).__name__}: {str(error)[:80]})")
                close_old_connections()
                stop.wait(0.5)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -2:
                next_at = time.monotonic()
        connections.close_all()

    workers = [threading.Thread(target=trade, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    print("flowing", flush=True)
    sys.stdin.read()
    stop.set()
    for worker in workers:
        worker.join(30)
    print(json.dumps(dict(counts)), flush=True)


class Child:
    """A process of the bench whose stdout lines are read by a thread, one at a time."""

    def __init__(self, name: str, command: list[str], *, cwd: Path, env: dict, log: Path) -> None:
        self.name = name
        self.log = log.open("wb")
        self.lines: queue.Queue[str] = queue.Queue()
        self.popen = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.log.write(line.encode())
            self.log.flush()
            self.lines.put(line.strip())

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def expect(self, test: Any, timeout: float) -> str:
        """The next line `test` accepts (others are skipped), waiting at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(
                    f"{self.name}: no expected line in {timeout:g} s; see {self.log.name}"
                )
            try:
                line = self.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.popen.poll() is not None:
                    raise SystemExit(f"{self.name} exited; see {self.log.name}") from None
                continue
            if test(line):
                return line

    def close_input(self) -> None:
        with contextlib.suppress(OSError):
            assert self.popen.stdin is not None
            self.popen.stdin.close()


def expand_channels(kinds: list[str], symbols: list[str]) -> list[str]:
    """`book`, `trades.` ... for each symbol: `book.AAPL`; `candles.1m` -> `candles.AAPL.1m`."""
    channels = []
    for symbol in symbols:
        for kind in kinds:
            name, _dot, rest = kind.partition(".")
            channels.append(f"{name}.{symbol}" + (f".{rest}" if rest else ""))
    return channels


def git_describe(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()[:90]
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"


def fanout_main(argv: list[str]) -> None:
    import benchlib  # sets Django up

    parser = argparse.ArgumentParser(
        prog="bench/stream.py fanout",
        description="The socket fan-out with the whole venue running (see bench/stream.py).",
    )
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--symbols", type=int, default=5, help="symbols each client watches")
    parser.add_argument("--channels", default="book,trades,ticker", help="kinds, per symbol")
    parser.add_argument("--depth", type=int, default=20, help="book depth subscribed")
    parser.add_argument("--seconds", type=float, default=30.0, help="the measured window")
    parser.add_argument("--orders-per-s", type=float, default=200.0)
    parser.add_argument("--order-threads", type=int, default=4)
    parser.add_argument(
        "--web-processes", type=int, default=1, help="daphne processes on the one port"
    )
    parser.add_argument("--sample", type=int, default=20, help="clients that parse every frame")
    parser.add_argument("--generators", type=int, default=1, help="client processes")
    parser.add_argument("--connect-rate", type=float, default=200.0, help="connections/s")
    parser.add_argument(
        "--server-root",
        type=Path,
        default=benchlib.ROOT,
        help="checkout whose code serves (default: this one)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="print the log directory")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="tredye-fanout-"))
    children: dict[str, Child] = {}
    servers: dict[str, subprocess.Popen] = {}
    broker = None
    db_name = f"bench_fanout_{os.getpid()}"
    created = False
    from django.db import connection

    maintenance_db = connection.settings_dict["NAME"]
    try:
        from django.conf import settings

        from tredye.devbroker import Broker, free_port

        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            broker = Broker(free_port(), workdir)
            broker.start()
            settings.KAFKA_BOOTSTRAP_SERVERS = [broker.address]
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{db_name}"')
        created = True
        fanout_run(args, workdir, db_name, children, servers)
    finally:
        for child in children.values():
            child.close_input()
        for child in children.values():
            try:
                child.popen.wait(30)
            except subprocess.TimeoutExpired:
                child.popen.kill()
        for process in servers.values():
            process.terminate()
        for name, process in servers.items():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                benchlib.log(f"{name} ignored SIGTERM for 30 s: killed")
                process.kill()
                process.wait()
        if broker is not None:
            broker.kill()
        if created:
            benchlib.drop_scratch_database(db_name, maintenance_db)
        if args.keep_logs:
            benchlib.log(f"logs: {workdir}")


class FlushProbe:
    """Where the latency goes: subscribes to the stream worker's flushes as a web process's
    hub does (this checkout's flush format; an old server publishes none) and times each
    message from its event (`ts`) to the worker's flush (`at`), and each flush from `at` to
    its arrival here. What sampled clients see beyond both is the fan-out."""

    def __init__(self, channel: str) -> None:
        import redis
        from django.conf import settings

        self.to_flush: list[float] = []
        self.to_subscriber: list[float] = []
        self.stopping = threading.Event()
        self.client = redis.Redis.from_url(settings.REDIS_URL)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import re

        from marketdata.broadcast import payload_parse

        stamp = re.compile(r'"ts":(\d+)')
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "message":
                continue
            now = time.time()
            try:
                at, items = payload_parse(message["data"].decode())
            except ValueError:
                continue
            self.to_subscriber.append((now - at) * 1000)
            for text in items.values():
                found = stamp.search(text, 0, 160)
                if found:
                    self.to_flush.append(at * 1000 - int(found[1]))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()

    def report(self, log) -> None:  # noqa: ANN001 - benchlib.log
        from benchlib import percentile

        for label, values in (
            ("event -> worker flush", self.to_flush),
            ("flush -> a subscriber", self.to_subscriber),
        ):
            if values:
                log(
                    f"  {label:22} p50 {percentile(values, 0.5):.0f} ms   "
                    f"p90 {percentile(values, 0.9):.0f} ms   p99 {percentile(values, 0.99):.0f} ms"
                    f"   ({len(values):,})"
                )


def fanout_run(
    args: argparse.Namespace,
    workdir: Path,
    db_name: str,
    children: dict[str, Child],
    servers: dict[str, subprocess.Popen],
) -> None:
    from benchlib import (
        ROOT,
        child_pids,
        connections_by_pid,
        cpu_seconds,
        database_url,
        log,
        machine_busy_seconds,
    )
    from django.conf import settings
    from django.db import connection

    from tredye.devbroker import free_port

    root = args.server_root.resolve()
    prefix = f"benchfanout{os.getpid()}."
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tredye.settings.local",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url(db_name),
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
        "KAFKA_TOPIC_PREFIX": prefix,
        "CHANNEL_LAYER_PREFIX": prefix,
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
        # every bench client connects from 127.0.0.1: the per-address socket limit off
        "WS_MAX_SOCKETS_PER_IP": "0",
        "PYTHONUNBUFFERED": "1",
    }
    python = sys.executable
    manage = [python, str(root / "manage.py")]
    log(f"server: {root} ({git_describe(root)}); logs in {workdir}")
    for command in (["migrate", "--noinput"], ["kafka_topics"], ["seed_demo"]):
        done = subprocess.run(
            [*manage, *command], cwd=root, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"manage.py {command[0]} failed:\n{done.stdout}{done.stderr}")

    connection.close()
    connection.settings_dict["NAME"] = db_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT symbol FROM trading_instrument WHERE lot_size = 1 ORDER BY symbol LIMIT %s",
            [args.symbols],
        )
        symbols = [row[0] for row in cursor.fetchall()]
        if len(symbols) < args.symbols:
            cursor.execute(
                "SELECT symbol FROM trading_instrument WHERE symbol <> ALL(%s) ORDER BY symbol",
                [symbols],
            )
            symbols += [row[0] for row in cursor.fetchall()][: args.symbols - len(symbols)]
    connection.close()
    kinds = [kind.strip() for kind in args.channels.split(",") if kind.strip()]
    channels = expand_channels(kinds, symbols)

    def start(name: str, command: list[str]) -> None:
        with (workdir / f"{name}.log").open("wb") as out:
            servers[name] = subprocess.Popen(
                command, cwd=root, env=env | {"PGAPPNAME": name}, stdout=out, stderr=out
            )

    port = free_port()
    web = ["--processes", str(args.web_processes), "--host", "127.0.0.1", "--port", str(port)]
    if (root / "tredye" / "serve.py").exists():
        start("web", [python, "-m", "tredye.serve", *web])
    else:  # a checkout from before tredye.serve: this one's runs its daphnes (-P: none of ours)
        start("web", [python, "-P", str(ROOT / "tredye" / "serve.py"), *web])
    for name, command in (
        ("stream", "run_stream"),
        ("feed", "run_feed"),
        ("matcher", "run_matcher"),
        ("relay", "run_outbox_relay"),
        ("maker", "run_market_maker"),
    ):
        start(name, [*manage, command])
    wait_until_serving(f"http://127.0.0.1:{port}/healthz", servers["web"], workdir / "web.log")
    daphnes = [
        pid
        for pid in child_pids(servers["web"].pid)
        if b"daphne" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    log(
        f"{len(daphnes)} daphne processes on port {port}; stream worker, feed, matcher, relay, "
        f"market maker running; {len(symbols)} symbols: {', '.join(symbols)}"
    )

    flow_source = inspect.getsource(order_flow) + (
        f"\norder_flow(symbols={symbols!r}, rate={args.orders_per_s!r}, "
        f"threads={args.order_threads!r})\n"
    )
    children["flow"] = Child(
        "order flow",
        [*manage, "shell", "-c", flow_source],
        cwd=root,
        env=env | {"PGAPPNAME": "flow"},
        log=workdir / "flow.log",
    )
    children["flow"].expect(lambda line: line == "flowing", 120)
    log(f"order flow: {args.orders_per_s:g} orders/s over {args.order_threads} threads")

    generators = max(1, min(args.generators, args.clients))
    for index in range(generators):
        count = args.clients // generators + (index < args.clients % generators)
        children[f"clients{index}"] = Child(
            f"clients {index}",
            [
                python, str(Path(__file__).resolve()), "clients",
                "--port", str(port), "--count", str(count),
                "--sample", str(args.sample if index == 0 else 0),
                "--subscribe", ",".join(channels), "--depth", str(args.depth),
                "--connect-rate", str(args.connect_rate / generators),
            ],
            cwd=ROOT,
            env=env,
            log=workdir / f"clients{index}.log",
        )  # fmt: skip
    generator_names = [f"clients{index}" for index in range(generators)]
    subscribed = 0
    for name in generator_names:
        ready = json.loads(children[name].expect(lambda line: line.startswith("{"), 300))
        subscribed += ready["subscribed"]
    spread = connections_by_pid(port, daphnes)
    log(
        f"{args.clients} clients connected, {subscribed} subscribed to {len(channels)} channels "
        f"each ({', '.join(channels[: len(kinds)])}, ... depth {args.depth}); sockets per "
        f"daphne: {', '.join(f'{pid}: {held}' for pid, held in spread.items())}"
    )
    if not subscribed:
        hint = (
            "" if kinds == ["ticker"] else " (a server that knows ticker.* only: --channels ticker)"
        )
        raise SystemExit(f"no client could subscribe; see {workdir}/clients0.log{hint}")
    time.sleep(2)

    watched = {"daphne": daphnes} | {
        name: [servers[name].pid] for name in ("stream", "feed", "matcher", "relay", "maker")
    }
    watched["order flow"] = [children["flow"].popen.pid]
    watched["generator"] = [children[name].popen.pid for name in generator_names]

    def cpu() -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in watched.items()}

    def orders_and_trades() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM trading_order), (SELECT count(*) FROM trading_trade)"
            )
            placed, traded = cursor.fetchone()
        return placed, traded

    probe = FlushProbe(f"{prefix}stream")
    daphne_before = {pid: cpu_seconds(pid) for pid in daphnes}
    orders_before = orders_and_trades()
    cpu_before, machine_before = cpu(), machine_busy_seconds()
    started = time.monotonic()
    for name in generator_names:
        children[name].send("start")
    time.sleep(args.seconds)
    for name in generator_names:
        children[name].send("stop")
    window = time.monotonic() - started
    probe.stop()
    cpu_after, machine_after = cpu(), machine_busy_seconds()
    daphne_after = {pid: cpu_seconds(pid) for pid in daphnes}
    orders_after = orders_and_trades()
    connection.close()
    results = [
        json.loads(children[name].expect(lambda line: line.startswith("{"), 60))
        for name in generator_names
    ]
    for name in generator_names:
        children[name].send("quit")
    children["flow"].close_input()
    flow_counts = json.loads(children["flow"].expect(lambda line: line.startswith("{"), 60))

    frames = sum(result["frames"] for result in results)
    messages = sum(result["messages"] for result in results)
    data = sum(result["bytes"] for result in results)
    used = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    sample = results[0]
    latency = sample["latency_ms"]
    log(
        f"\nfan-out: {args.clients} clients x {len(channels)} channels "
        f"({args.channels} of {len(symbols)} symbols), {len(daphnes)} daphne process(es), "
        f"{window:.1f} s measured"
    )
    log(
        f"  order flow             {(orders_after[0] - orders_before[0]) / window:8.0f} orders/s "
        f"placed (asked {args.orders_per_s:g}), "
        f"{(orders_after[1] - orders_before[1]) / window:.0f} trades/s"
    )
    log(
        f"  delivered (all)        {messages / window:8,.0f} messages/s   {frames / window:8,.0f} "
        f"frames/s   {data / window / 1e6:.1f} MB/s   "
        f"{frames / window / args.clients:.1f} frames/s per client"
    )
    if latency:
        log(
            f"  event -> client        p50 {latency['0.5']:.0f} ms   p90 {latency['0.9']:.0f} ms   "
            f"p99 {latency['0.99']:.0f} ms   max {latency['max']:.0f} ms   "
            f"({sample['latency_count']:,} messages to {sample['sample_clients']} sampled clients)"
        )
    else:
        log("  event -> client        no message reached the sampled clients")
    probe.report(log)
    per_daphne = ", ".join(
        f"{pid}: {(daphne_after[pid] - daphne_before[pid]) / window * 100:.0f}%" for pid in daphnes
    )
    log(
        f"  daphne CPU             {used['daphne']:8.2f} s = "
        f"{used['daphne'] * 1000 / max(frames, 1):.3f} s per 1,000 frames "
        f"({used['daphne'] / window * 100:.0f}% of a core; {per_daphne})"
    )
    log(
        f"  generator CPU          {used['generator']:8.2f} s = "
        f"{used['generator'] / window * 100:.0f}% of a core ({generators} process"
        f"{'es' if generators > 1 else ''}; machine {os.cpu_count()} CPUs, busy "
        f"{(machine_after - machine_before) / window * 100:.0f}% of a core)"
    )
    others = ", ".join(
        f"{name} {used[name] / window * 100:.0f}%"
        for name in ("stream", "feed", "matcher", "relay", "maker", "order flow")
    )
    log(f"  others (% of a core)   {others}")
    closed = sum(result["closed_during_window"] for result in results)
    errors: dict[str, int] = {}
    for result in results:
        for code, number in result["errors"].items():
            errors[code] = errors.get(code, 0) + number
    if closed or errors:
        first = next((r["first_error"] for r in results if r["first_error"]), "")
        log(f"  sockets closed during the window: {closed}; errors {errors}; first: {first}")
    refused = {key: value for key, value in flow_counts.items() if key != "placed"}
    if refused:
        log(f"  order flow besides placements: {refused}")


def main() -> None:
    command, argv = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "fanout":
        fanout_main(argv)
    elif command == "clients":
        clients_main(argv)
    else:
        ticks_main(sys.argv[1:])


if __name__ == "__main__":
    main()
