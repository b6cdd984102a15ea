"""``v1sync_build_info``: the versions actually installed, one series of value 1."""

from __future__ import annotations

import platform
from importlib import metadata

import celery
import kombu
from prometheus_client import CollectorRegistry

from sync_core.build_info import BUILD_INFO_METRIC, build_labels, register_build_info
from v1_sync_helper import __version__


def test_build_info_names_the_running_versions() -> None:
    registry = CollectorRegistry()
    register_build_info(registry)
    labels = {
        "version": __version__,
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "nats_py": metadata.version("nats-py"),
    }
    assert build_labels() == labels
    assert registry.get_sample_value(BUILD_INFO_METRIC, labels) == 1.0
    samples = [s for family in registry.collect() for s in family.samples]
    assert len(samples) == 1
