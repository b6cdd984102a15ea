"""The Celery binding and the worker process: the app, the task, the process's runtime.

- ``app``: the Celery app, configured from the environment at import (light
  settings only), with the library patches applied;
- ``task``: ``sync_kv_entry`` on the app, calling ``tasks.run.sync.run_sync``, and
  ``sync_v2_event`` (V2 -> V1), calling ``tasks.run.reverse.run_reverse``;
- ``process``: the process's ``Runtime`` (opened once, closed at shutdown; the
  Celery signals);
- ``command``: ``v1-sync-helper worker`` (only the CLI imports it);
- ``health`` and ``probes``: the worker's own liveness and readiness (its
  consumer loop and task slots, not the broker), served on its metrics port;
- ``patches/``: the three changes to private parts of kombu and Celery, pinned
  and guarded by tests.

The top room of ``tasks/``: nothing else in ``tasks/`` imports it except
``tasks.celery`` (``celery -A tasks``); ``tests/test_layout.py`` checks it.
"""
