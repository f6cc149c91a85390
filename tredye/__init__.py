"""Tredye: a real-time trading venue."""

from tredye.celery import app as celery_app

__all__ = ["celery_app"]
