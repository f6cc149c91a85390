"""`make run`'s local broker is replaced by an empty one when a partition grows too long."""

from __future__ import annotations

import subprocess
import sys
import time

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from testing.helpers import ROOT
from tredye.devbroker import free_port, partition_batches


def test_the_local_broker_is_rolled_past_its_batch_limit(tmp_path):
    # given the rolling broker with a low limit
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path / "roller.log"
    with log.open("wb") as out:
        roller = subprocess.Popen(
            [sys.executable, "-m", "tredye.devbroker", "--port", str(port), "--log",
             str(tmp_path / "broker.log"), "--roll-after-batches", "50", "--check-every", "0.5"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "local broker on" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        admin = KafkaAdminClient(bootstrap_servers=address)
        admin.create_topics([NewTopic("long", 1, 1)])
        admin.close()

        # when a partition passes it, one record batch at a time
        producer = KafkaProducer(bootstrap_servers=address, linger_ms=0)
        for _ in range(60):
            producer.send("long", b"x").get(timeout=10)
        producer.close()

        # then the broker is replaced by an empty one on the same port, and says so
        deadline = time.monotonic() + 30
        while "ROLLING the local broker" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "long[0] holds 60 record batches" in log.read_text()
        deadline = time.monotonic() + 20
        while True:
            try:
                batches = partition_batches(address)
                break
            except Exception:  # noqa: BLE001 - the new broker is starting
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert "long[0]" not in batches
        assert roller.poll() is None
    finally:
        roller.terminate()
        roller.wait(10)


def test_make_runs_broker_starts_and_hands_back_its_pid(tmp_path):
    # `make run` starts it inside $(...): it must come back with a pid, not hold the shell
    port = free_port()
    script = (
        f'source scripts/lib.sh; pid="$(start_rolling_broker {port} {tmp_path}/broker.log)"; '
        'echo "started $pid"; kill "$pid"; wait "$pid" 2>/dev/null; true'
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.startswith("started "), result.stderr
    assert result.stdout.split()[1].isdigit()
