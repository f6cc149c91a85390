"""The Celery application: settlement, reconciliation and expiry run here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tredye.settings.local")

app = Celery("tredye")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
