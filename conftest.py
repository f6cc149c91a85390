"""Fixtures shared by every app's tests: the factories of `testing.factories` (with database
access), and real processes on the real services (`testing.helpers` has the rest).

`make test` (scripts/pytest.sh) starts a private Kafka broker and exports
KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PREFIX and TEST_DATABASE_NAME before pytest runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from testing.helpers import ROOT, daphne_command, manage, wait_for_http
from tredye.devbroker import Broker, free_port


@pytest.fixture(scope="session")
def kafka_topics(django_db_setup: None) -> None:
    """Every prefixed topic exists on the test broker."""
    from tredye import kafka

    kafka.ensure_topics()


@pytest.fixture(scope="session")
def process_env(django_db_setup: None) -> dict[str, str]:
    """Environment for child processes: the test database, broker and topic prefix."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    url = f"postgres://{user}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "tredye.settings.test",
        "DATABASE_URL": url,
        "PYTHONUNBUFFERED": "1",
    }


class Process:
    """A child process whose output is kept for the failure report."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


class ProcessStarter:
    """Starts child processes on the test database and broker, and stops them all at once."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[Process] = []

    def __call__(self, name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        process = Process(name, list(args), self.env | (env or {}), self.log_dir)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture(scope="session")
def start_process(process_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """Start a child process that lives for the whole session (servers, shared workers)."""
    starter = ProcessStarter(process_env, tmp_path_factory.mktemp("processes"))
    yield starter
    starter.stop_all()


@pytest.fixture
def start_test_process(process_env: dict[str, str], tmp_path: Path):
    """Start a child process that is stopped when the test ends (a feed, a matcher)."""
    starter = ProcessStarter(process_env, tmp_path)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="session")
def asgi_server(start_process, kafka_topics: None) -> str:
    """Daphne serving the real ASGI app on a free port; returns its base URL."""
    port = free_port()
    process = start_process("daphne", *daphne_command(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", 30, process.popen)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{process.output()}") from error
    return url


@pytest.fixture(scope="session")
def stream_process(start_process, kafka_topics: None) -> Process:
    """The real stream worker, consuming the test broker's ticks topic."""
    return start_process("stream", *manage("run_stream"))


@pytest.fixture
def order_path(start_process, kafka_topics) -> Iterator[str]:
    """The relay and the matcher as real child processes, on topics of this test's own."""
    from django.conf import settings
    from django.test import override_settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:8]}."
    env = {"KAFKA_TOPIC_PREFIX": prefix, "LOG_LEVEL": "INFO"}
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        from tredye import kafka

        kafka.ensure_topics()
        relay = start_process(f"relay-{prefix}", *manage("run_outbox_relay"), env=env)
        matcher = start_process(f"matcher-{prefix}", *manage("run_matcher"), env=env)
        yield prefix
        for process in (matcher, relay):
            process.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"Chromium not found at {path}: run scripts/setup.sh --browser")
    return path


@pytest.fixture
def browser_page(chromium_path: str) -> Iterator[object]:
    """A fresh headless Chromium page (Playwright, Debian's chromium)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls made by
    # later fixtures and teardown in this test are ordinary sync code, not async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        try:
            yield page
        finally:
            browser.close()
            # Connections opened in here belong to Playwright's context, which pytest-django
            # does not see; close them or the test database cannot be dropped.
            from django.db import connections

            connections.close_all()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, for tests that take Kafka away."""
    broker = Broker(free_port(), tmp_path)
    broker.start()
    yield broker
    broker.kill()


# ---------------------------------------------------------------------------------------------
# Factories: each fixture is the function of the same name in testing.factories.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def make_asset(db) -> Callable[..., object]:
    from testing import factories

    return factories.make_asset


@pytest.fixture
def make_account(db) -> Callable[..., object]:
    from testing import factories

    return factories.make_account


@pytest.fixture
def make_instrument(db) -> Callable[..., object]:
    from testing import factories

    return factories.make_instrument


@pytest.fixture
def make_price_model(db) -> Callable[..., object]:
    from testing import factories

    return factories.make_price_model


@pytest.fixture
def make_queued_command(db) -> Callable[..., object]:
    from testing import factories

    return factories.make_queued_command


@pytest.fixture
def make_trades(db) -> Callable[..., object]:
    from testing import factories

    return factories.make_trades


# ---------------------------------------------------------------------------------------------
# Celery: a real worker process on the test database and Redis
# ---------------------------------------------------------------------------------------------

# The Redis database of test workers (never CELERY_BROKER_URL's, which `make run` uses); each
# session also has a queue of its own, so two test runs never take each other's tasks.
TEST_CELERY_REDIS_DB = 2


class CeleryWorker:
    """A `celery -A tredye worker` child process consuming a queue of this session's own."""

    def __init__(self, process: Process, queue: str) -> None:
        self.process = process
        self.queue = queue

    def run(self, task: object, timeout_s: float = 60.0, **kwargs: object) -> object:
        """Send `task` with `kwargs` to this worker; return its result, or raise what it
        raised (celery re-raises the task's exception here)."""
        import time

        from celery.exceptions import TimeoutError as ResultTimeout

        result = task.apply_async(kwargs=kwargs, queue=self.queue, ignore_result=False)  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.process.popen.poll() is not None:
                    raise RuntimeError(f"the celery worker exited\n{self.process.output()}")
                try:
                    return result.get(timeout=0.5)
                except ResultTimeout:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{task} took over {timeout_s} s\n{self.process.output()}"
                        ) from None
        finally:
            result.forget()


@pytest.fixture(scope="session")
def celery_worker(start_process, process_env: dict[str, str]) -> Iterator[CeleryWorker]:
    """A real Celery worker (solo pool) on the test database, its broker and results in Redis
    database TEST_CELERY_REDIS_DB; the test process sends to it through the same app."""
    from django.conf import settings

    from tredye.celery import app

    base = settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    url = f"{base}/{TEST_CELERY_REDIS_DB}"
    queue = f"test-{uuid.uuid4().hex[:12]}"
    saved = {key: app.conf[key] for key in ("broker_url", "result_backend")}
    app.conf.update(broker_url=url, result_backend=url)
    process = start_process(
        f"celery-{queue}",
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tredye",
        "-b",
        url,
        "--result-backend",
        url,
        "worker",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--pool",
        "solo",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    )
    yield CeleryWorker(process, queue)
    process.stop()
    app.conf.update(saved)
