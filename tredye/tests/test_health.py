import os
import subprocess
import sys
import uuid

import pytest

from testing.helpers import ROOT
from tredye import status
from tredye.devbroker import free_port


def test_healthz_says_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
def no_worker_reports(settings):
    """A prefix of this test's own: no report of another test's workers is seen."""
    settings.KAFKA_TOPIC_PREFIX = f"health{uuid.uuid4().hex[:8]}."


@pytest.mark.django_db
def test_readyz_is_ready_when_every_dependency_answers(client, kafka_topics, no_worker_reports):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"},
        "degraded": [],
        "workers": {},
    }


@pytest.mark.django_db
def test_readyz_says_orders_are_queued_when_the_matcher_does_not_apply_them(
    client, kafka_topics, no_worker_reports, make_queued_command
):
    # given a command accepted 30 s ago and never applied (matcher, relay or broker stalled)
    make_queued_command(age_s=30)
    # when /readyz is asked
    response = client.get("/readyz")
    # then this process is still ready, and the platform says the order path is queued
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    [part] = body["degraded"]
    assert (part["part"], part["state"]) == ("matcher", "queued")
    assert part["message"] == "Orders are queued: the matching service is not keeping up."
    assert part["age_s"] >= 30


@pytest.mark.django_db
def test_readyz_names_a_consumer_that_has_input_and_makes_no_progress(
    client, kafka_topics, no_worker_reports, settings
):
    status.worker_report("stream", lag=0, progress_age_s=0.0, connected=True, consumed=5)
    status.worker_report("matcher", lag=120, progress_age_s=60.0, connected=True, consumed=9)
    body = client.get("/readyz").json()
    assert body["status"] == "degraded"
    assert [(p["part"], p["state"]) for p in body["degraded"]] == [("matcher", "stalled")]
    assert body["workers"]["matcher"]["lag"] == 120
    # a worker that stops cleanly takes its report away
    status.worker_forget("matcher")
    assert client.get("/readyz").json()["status"] == "ready"


@pytest.mark.django_db
def test_readyz_is_503_naming_kafka_when_the_broker_is_unreachable(client, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "unreachable"}


@pytest.mark.django_db
def test_readyz_is_503_naming_redis_when_redis_is_unreachable(client, settings, kafka_topics):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "unreachable"
    assert response.json()["status"] == "unavailable"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": "s" * 50}, "DJANGO_DEBUG must be off"),
        ({"DJANGO_DEBUG": "false"}, "Set DJANGO_SECRET_KEY"),
    ],
)
def test_production_settings_refuse_debug_and_the_default_secret(env, message):
    child_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"} | env
    child_env["DJANGO_SETTINGS_MODULE"] = "tredye.settings.production"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
