"""The Celery app and the sync task: V1 records to V2 objects, with mappings and retries.

Layer 1: imports only the shared core (``sync_core``), never ``bridge``. ``celery -A
tasks`` finds the app in ``tasks.celery``. The rooms, bottom up:

- ``errors``: the errors a run can end in (shared by every room);
- ``mapping/``: V1 records to V2 bodies, pure;
- ``clients/``: V2, V1 API, Auth0, tokens, the user and organization directories;
- ``stores/``: id mappings, sync state, key leases, dead letters;
- ``kinds/``: one module per object type;
- ``run/``: the task run: decisions, the shared upsert/delete path, outcomes, retries;
- ``worker/``: the Celery app, the worker process and the library patches.
"""
