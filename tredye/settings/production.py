"""Production: secure by default; refuses to start with DEBUG on or the default secret key.

`manage.py check --deploy` gives no warning with only DJANGO_SECRET_KEY and
DJANGO_ALLOWED_HOSTS set (tredye/tests/test_deploy_settings.py).
"""

from django.core.exceptions import ImproperlyConfigured

from tredye.settings.base import *  # noqa: F403
from tredye.settings.base import ALLOWED_HOSTS, CONTENT_SECURITY_POLICY, SECRET_KEY, env

DEBUG = env.bool("DJANGO_DEBUG", default=False)
if DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production.")
if SECRET_KEY.startswith("local-insecure"):
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY to a real secret in production.")

# HTTPS only. The reverse proxy terminates TLS and says so in X-Forwarded-Proto (it must set
# that header itself, overwriting what a client sent); a plain-HTTP request is redirected.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Except the health endpoints: a load balancer, systemd or an operator probes daphne directly
# on 127.0.0.1 over plain HTTP, without the proxy's header; redirected to https they would
# fail the probe and take a healthy process out of service. They show no user data.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# HSTS: browsers use HTTPS only, for a year, on every subdomain; `preload` allows the domain
# on the browsers' built-in list (it is only put there when the owner submits it).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
# Django's defaults, stated: no MIME sniffing, no framing, the referrer only to this site.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# The stream socket over TLS on each named host, for browsers whose 'self' does not cover
# wss: (CSP Level 2); wildcard entries of ALLOWED_HOSTS name no single origin.
CONTENT_SECURITY_POLICY = {
    **CONTENT_SECURITY_POLICY,
    "DIRECTIVES": {
        **CONTENT_SECURITY_POLICY["DIRECTIVES"],
        "connect-src": ["'self'"]
        + [f"wss://{host}" for host in ALLOWED_HOSTS if host and not host.startswith((".", "*"))],
        "upgrade-insecure-requests": True,
    },
}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
