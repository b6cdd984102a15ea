"""The bridge process: JetStream pull consumer of ``v1-objects`` to Celery tasks in Redis.

Layer 1: imports only the shared core (``sync_core``), never ``tasks``.
"""
