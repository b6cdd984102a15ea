"""Dev-only package: embedded servers, fakes of the external services, sample data.

Beside the production layers: it may use ``sync_core``, ``bridge``, ``tasks`` and
``operations``; no production module imports it except the CLI's ``dev``.
"""
