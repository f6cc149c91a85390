"""Test runs: the real services, an isolated database and topic prefix (set by `make test`)."""

from tredye.settings.base import *  # noqa: F403
from tredye.settings.base import env

DEBUG = False
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None  # served from static/ by the finders; collectstatic is for production
WHITENOISE_AUTOREFRESH = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
KAFKA_TOPIC_PREFIX = env("KAFKA_TOPIC_PREFIX", default="test.")
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = env(  # noqa: F405
    "CHANNEL_LAYER_PREFIX", default=KAFKA_TOPIC_PREFIX.rstrip(".")
)
# A database per run, so two runs on one machine never collide (set by scripts/test.sh).
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default=None)}  # noqa: F405
# Close connections after each use, so threads of database_sync_to_async leave none open
# and the test database can be dropped at the end. A test's child process that must keep its
# connection, as a deployed worker does, sets TEST_CONN_MAX_AGE.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("TEST_CONN_MAX_AGE", default=0)  # noqa: F405
# The test process itself connects without the pool (a test's transaction must stay on one
# connection, and the test database is dropped at the end); a child process under test that
# should run as deployed sets DATABASE_POOL=true (then TEST_CONN_MAX_AGE does not apply).
DATABASE_POOL = env.bool("DATABASE_POOL", default=False)
if DATABASE_POOL:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
else:
    DATABASES["default"]["OPTIONS"].pop("pool", None)  # noqa: F405
