"""Developer machine: DEBUG on unless the environment says otherwise."""

from tredye.settings.base import *  # noqa: F403
from tredye.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# Serve static files straight from static/ without collectstatic.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None  # served from static/ by the finders; collectstatic is for production
WHITENOISE_AUTOREFRESH = DEBUG
