"""Operator commands: status, dead letters, requeue, replay, Flower and the hand-enqueue.

Above ``bridge`` and ``tasks``: these commands may use both (and the shared core),
and only the CLI imports them.
"""
