"""Lets ``celery -A tasks worker`` find the app (Celery looks for ``tasks.celery``)."""

from tasks.worker.app import app

__all__ = ["app"]
