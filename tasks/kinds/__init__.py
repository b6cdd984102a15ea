"""The object kinds: one module per V1 object type and what it owns (see ``tasks.run.upsert``).

Importing a kind reads no settings and loads no Celery app.
"""
