"""The Celery binding and the worker process: the app, its settings and ``v1-sync-helper worker``.

Nothing below ``tasks/`` imports this package except ``tasks.run.sync`` (which
registers the task on the app) and ``tasks.celery``; the kinds, the mapping,
the stores and the clients never do. Its ``patches/`` hold the three changes to
private parts of kombu and Celery, pinned and guarded by tests.
"""
