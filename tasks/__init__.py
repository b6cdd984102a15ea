"""The Celery app and the sync task: V1 records to V2 objects, with mappings and retries.

Layer 1: imports only the shared core (``sync_core``), never ``bridge``. ``celery -A
tasks`` finds the app in ``tasks.celery``. The rooms, bottom up (a room imports
only lower ones; ``tests/test_layout.py`` checks it):

- ``errors``: the errors a run can end in (shared by every room);
- ``mapping/``: V1 records to V2 bodies, pure, one module per type;
- ``stores/``: id mappings, sync state, key leases, dead letters;
- ``clients/``: V2 (and ``V2ServiceSpec``), V1 API, Auth0, tokens, the user and
  organization directories, the query service;
- ``kinds/``: one ``ObjectKind`` module per object type (``base``), and the
  ``registry`` every per-type table is built from;
- ``run/``: the run: the runtime (a plain container), decisions, the shared
  upsert/delete path, outcomes, retries;
- ``worker/``: the Celery app, the task binding, the process's runtime, the
  ``worker`` command and the library patches.

Importing the kinds, the mapping, the stores, the clients or the run reads no
settings and patches nothing (``tests/test_import_hygiene.py``).
"""
