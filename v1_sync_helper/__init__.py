"""Shared core of lfx-v1-sync-helper: settings, logging, NATS access and the CLI."""

__version__ = "0.1.0"
