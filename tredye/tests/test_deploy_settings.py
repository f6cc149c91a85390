"""Production settings are secure by default: `check --deploy` has nothing to say with only a
secret key and the allowed hosts set, and the health endpoints stay reachable over HTTP."""

import json
import os
import secrets
import subprocess
import sys

import pytest

from testing.helpers import ROOT

# Settings that could come from a developer's shell or .env and hide a missing default.
PRODUCTION_KNOBS = {
    "DJANGO_DEBUG",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
}


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_KNOBS}
    return env | {
        "DJANGO_SETTINGS_MODULE": "tredye.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "example.com",
        **extra,
    }


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_gives_no_warning_with_only_a_secret_key_and_allowed_hosts():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output, output
    assert "security.W" not in output, output
    assert "System check identified no issues" in output, output


def test_production_settings_are_secure_by_default():
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'redirect': s.SECURE_SSL_REDIRECT, 'exempt': s.SECURE_REDIRECT_EXEMPT,"
        "'hsts': s.SECURE_HSTS_SECONDS, 'sub': s.SECURE_HSTS_INCLUDE_SUBDOMAINS,"
        "'preload': s.SECURE_HSTS_PRELOAD, 'session': s.SESSION_COOKIE_SECURE,"
        "'csrf': s.CSRF_COOKIE_SECURE,"
        "'connect': s.CONTENT_SECURITY_POLICY['DIRECTIVES']['connect-src']}))"
    )
    result = run_manage("shell", "-c", code, env=production_env())
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "redirect": True,
        "exempt": [r"^healthz$", r"^readyz$", r"^metrics$"],
        "hsts": 31536000,
        "sub": True,
        "preload": True,
        "session": True,
        "csrf": True,
        "connect": ["'self'", "wss://example.com"],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "redirected"),
    [("/healthz", False), ("/readyz", False), ("/", True), ("/accounts/login/", True)],
)
def test_plain_http_is_redirected_to_https_except_the_health_probes(
    settings, client, path, redirected
):
    # What production.py sets, applied to the test settings (the test database and services).
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    plain = client.get(path)
    behind_the_proxy = client.get(path, HTTP_X_FORWARDED_PROTO="https")

    if redirected:
        assert plain.status_code == 301
        assert plain["Location"] == f"https://testserver{path}"
        assert behind_the_proxy.status_code != 301
    else:
        assert plain.status_code != 301


def test_production_refuses_the_local_secret_key():
    env = production_env(DJANGO_SECRET_KEY="local-insecure-secret-key-change-me")  # noqa: S106
    result = run_manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
