"""/metrics: one venue's metrics across processes, in Prometheus's text format, for this host."""

from __future__ import annotations

import json
import re
import sys
import urllib.request

import pytest
from django.test import Client
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from testing.helpers import daphne_command, wait_for, wait_for_http
from tredye import metrics
from tredye.devbroker import free_port

# A process that counts as a web process would, then stays up until it is stopped.
COUNTING_PROCESS = """
import sys, time
import django
django.setup()
from tredye import metrics
n = int(sys.argv[1])
metrics.WS_CONNECTED_SOCKETS.inc(n)
metrics.WS_FRAMES_SENT.inc(n)
metrics.WS_MESSAGE_LATENCY.labels(kind="ticker").observe(0.02)
print("counted", flush=True)
time.sleep(120)
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scrape's samples by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client, **extra: str) -> str:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200
    return response.content.decode()


def test_metrics_are_served_in_the_text_format_with_help_and_types():
    metrics.WS_MESSAGES_SENT.labels(kind="ticker").inc(2)
    metrics.WS_MESSAGE_LATENCY.labels(kind="ticker").observe(0.003)
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert "no-cache" in response["Cache-Control"]
    text = response.content.decode()
    assert "# HELP tredye_ws_messages_sent_total Messages sent to sockets" in text
    assert "# TYPE tredye_ws_message_latency_seconds histogram" in text
    assert "# TYPE tredye_ws_connected_sockets gauge" in text
    found = samples(text)
    assert found[("tredye_ws_messages_sent_total", (("kind", "ticker"),))] >= 2
    # The buckets run from 1 ms to 10 s.
    assert ("tredye_ws_message_latency_seconds_bucket", (("kind", "ticker"), ("le", "0.001"))) in (
        found
    )
    assert ("tredye_ws_message_latency_seconds_bucket", (("kind", "ticker"), ("le", "10.0"))) in (
        found
    )


@pytest.mark.parametrize(
    ("peer", "forwarded", "allowed", "trusted", "status"),
    [
        ("127.0.0.1", None, ["127.0.0.1/32", "::1/128"], [], 200),
        ("203.0.113.5", None, ["127.0.0.1/32", "::1/128"], [], 404),
        ("10.1.2.3", None, ["10.0.0.0/8"], [], 200),
        ("127.0.0.1", None, [], [], 404),
        # a client on the internet behind the proxy on this host: the proxy's address is not
        # the client's
        ("127.0.0.1", "198.51.100.7", ["127.0.0.1/32"], ["127.0.0.1/32"], 404),
        # X-Forwarded-For from a peer that is no trusted proxy is ignored
        ("203.0.113.5", "127.0.0.1", ["127.0.0.1/32"], [], 404),
    ],
)
def test_only_allowed_addresses_read_the_metrics_anyone_else_gets_a_404(
    settings, peer, forwarded, allowed, trusted, status
):
    settings.METRICS_ALLOWED_IPS = allowed
    settings.TRUSTED_PROXIES = trusted
    extra = {"REMOTE_ADDR": peer} | ({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {})
    response = Client().get("/metrics", **extra)
    assert response.status_code == status
    if status == 404:
        assert b"tredye_" not in response.content


def test_only_get_and_head():
    assert Client().post("/metrics").status_code == 405
    assert Client().head("/metrics").status_code == 200


def test_two_web_processes_answer_with_one_registry(start_test_process, tmp_path):
    # given two daphnes sharing one directory
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    urls = []
    for name in ("web-a", "web-b"):
        port = free_port()
        process = start_test_process(name, *daphne_command(port), env=shared)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", 30, process.popen)
        urls.append(url)

    def read(url: str) -> dict:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            return samples(response.read().decode())

    # when the first answers twice and the second once
    read(urls[0])
    read(urls[0])
    found = read(urls[1])
    # then the second counts all three (each counts its scrape before it answers)
    assert found[("tredye_metrics_scrapes_total", ())] == 3


def test_a_dead_process_sockets_stop_counting_its_counts_stay(
    start_test_process, tmp_path, settings
):
    directory = tmp_path / "prometheus"
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    first = start_test_process("count-2", sys.executable, "-c", COUNTING_PROCESS, "2", env=shared)
    second = start_test_process("count-3", sys.executable, "-c", COUNTING_PROCESS, "3", env=shared)
    for process in (first, second):
        wait_for(lambda process=process: "counted" in process.output(), 30, process.name)
    settings.PROMETHEUS_MULTIPROC_DIR = str(directory)
    client = Client()

    both = samples(scrape(client))
    assert both[("tredye_ws_connected_sockets", ())] == 5
    assert both[("tredye_ws_frames_sent_total", ())] == 5
    assert both[("tredye_ws_message_latency_seconds_count", (("kind", "ticker"),))] == 2

    second.popen.kill()  # a crash: no chance to remove its own files
    second.popen.wait()
    after = samples(scrape(client))
    assert after[("tredye_ws_connected_sockets", ())] == 2
    assert after[("tredye_ws_frames_sent_total", ())] == 5  # totals never go backwards
    assert not list(directory.glob(f"gauge_live*_{second.popen.pid}.db"))


def test_a_pages_frame_render_times_are_counted_and_bad_beacons_refused(client):
    def count() -> float:
        text = client.get("/metrics").content.decode()
        found = re.search(r'tredye_page_frame_render_seconds_count\{page="trade"\} (\S+)', text)
        return float(found[1]) if found else 0.0

    before = count()
    beacon = {"page": "trade", "frames_ms": [1.5, 0.25, 12]}
    response = client.post("/metrics/frames", json.dumps(beacon), content_type="text/plain")
    assert response.status_code == 204
    assert count() == before + 3
    for bad, code in (
        ("{not json", "bad_json"),
        (json.dumps({"page": "admin", "frames_ms": [1]}), "bad_page"),
        (json.dumps({"page": "trade", "frames_ms": [-1]}), "bad_frames"),
        (json.dumps({"page": "trade", "frames_ms": ["1"]}), "bad_frames"),
        (json.dumps({"page": "trade", "frames_ms": [True]}), "bad_frames"),
        (json.dumps({"page": "trade", "frames_ms": [1] * 501}), "bad_frames"),
        ('{"page": "trade", "frames_ms": [NaN]}', "bad_json"),
        ("x" * 20_000, "body_too_large"),
    ):
        response = client.post("/metrics/frames", bad, content_type="text/plain")
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), bad[:40]
    assert client.get("/metrics/frames").status_code == 405
    assert count() == before + 3
