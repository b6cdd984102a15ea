"""Shared core: settings, JSON logs, NATS access, broker conventions and the V1 key codec.

The bottom layer: ``bridge``, ``tasks`` and the operator commands build on it, and
it imports nothing else of the project.
"""
