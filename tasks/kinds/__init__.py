"""The object kinds: one ``ObjectKind`` per V1 object type, owning every fact about it.

``base`` defines the kind (and the protocols through which it sees a run),
one module per type subclasses it (``projects``, ``committees``, ``members``),
and ``registry`` holds the registered kinds that every per-type table is built
from. ``docs/contributing.md`` says how to add a type.

Importing a kind reads no settings and loads no Celery app; no kind imports
``tasks.run`` or ``tasks.worker``.
"""
