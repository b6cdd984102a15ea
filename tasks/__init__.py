"""The Celery app and the sync task: V1 records to V2 objects, with mappings and retries.

Layer 1: imports only the shared core (``sync_core``), never ``bridge``. ``celery -A
tasks`` finds the app in ``tasks.celery``.
"""
