"""``v1sync_build_info``: which build runs, as a gauge of 1 with the versions as labels.

Served by the bridge and the worker, so a dashboard or an alert can tell which
version of the service, Python, Celery, kombu and nats-py each process runs
(e.g. during a rollout, or when a patch of a library's private parts is
suspected, see the issue of locked versions). A custom collector rather than a
``Gauge``: it reads nothing at scrape time, and it works in the worker's
multi-process mode, where only the main process serves it.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from functools import lru_cache
from importlib import metadata

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BUILD_INFO_METRIC = "v1sync_build_info"
DISTRIBUTION = "lfx-v1-sync-helper"
UNKNOWN = "unknown"
# Label name -> distribution whose installed version it carries.
LIBRARIES = {"celery": "celery", "kombu": "kombu", "nats_py": "nats-py"}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return UNKNOWN


@lru_cache(maxsize=1)
def build_labels() -> dict[str, str]:
    """The label values of ``v1sync_build_info`` for this installation."""
    labels = {"version": _version(DISTRIBUTION), "python": platform.python_version()}
    labels.update({label: _version(name) for label, name in LIBRARIES.items()})
    return labels


class BuildInfoCollector(Collector):
    """Exposes ``v1sync_build_info{version,python,celery,kombu,nats_py} 1``."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = build_labels()
        family = GaugeMetricFamily(
            BUILD_INFO_METRIC,
            "Versions of the service and of the libraries it patches; always 1.",
            labels=list(labels),
        )
        family.add_metric(list(labels.values()), 1.0)
        yield family


def register_build_info(registry: CollectorRegistry) -> None:
    """Add the build-info gauge to ``registry``."""
    registry.register(BuildInfoCollector())
