import os
import subprocess
import sys

import pytest

from conftest import ROOT
from tredye.devbroker import free_port


def test_healthz_says_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ready_when_every_dependency_answers(client, kafka_topics):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"},
    }


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
