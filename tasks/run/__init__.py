"""One run of ``sync_kv_entry``: decisions, the create/update/delete path, outcomes, retries.

``sync.py`` is the run (``run_sync``; the Celery task that calls it is
``tasks.worker.task``); ``upsert.py`` the one create/update/delete path every
object kind goes through; ``decisions.py`` the pure choices of a run;
``runtime.py`` the per-process resources a run uses (a plain container);
``dry_run/`` a runtime whose writes are recorded instead of made, on which
``explain`` runs the task's own ``run_sync``.
"""
