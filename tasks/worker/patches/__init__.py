"""Changes to private parts of kombu and Celery, applied by ``tasks.worker.app`` at start.

Each module documents the symbol it relies on and the versions it was tested
with; a test names every such symbol, so an upgrade that renames one fails loudly.
"""
