"""Ensure a durable JetStream pull consumer has the settings a process documents.

Start-up creates the consumer, or accepts it as it is when it already has
the documented settings (the Helm chart's NACK ``Consumer`` creates it with
the same ones), or updates the documented settings in place when they
drifted, keeping whatever else the existing consumer carries (description,
metadata, replicas). A setting the server cannot change in place (the
deliver policy) raises ``ConsumerConfigError`` saying which.

The bridge's KV consumer and the V2 events consumer share this one path.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo
from nats.js.errors import APIError, NotFoundError

log = logging.getLogger(__name__)

# The settings a consumer is documented with, compared one by one.
COMPARED_FIELDS = ("ack_policy", "deliver_policy", "max_deliver", "max_ack_pending")
# The server reports ack_wait in nanoseconds; nats-py turns it into float seconds.
ACK_WAIT_TOLERANCE_SECONDS = 1e-3


class ConsumerConfigError(RuntimeError):
    """The existing consumer differs in a way the server will not update."""


def filter_subjects_of(config: ConsumerConfig) -> list[str]:
    """The subjects a consumer filters on, whichever of the two fields holds them."""
    if config.filter_subjects:
        return list(config.filter_subjects)
    return [config.filter_subject] if config.filter_subject else []


def config_differences(wanted: ConsumerConfig, existing: ConsumerConfig) -> list[str]:
    """The documented settings on which ``existing`` differs from ``wanted``."""
    found: list[str] = []
    if existing.durable_name != wanted.durable_name:
        found.append("durable_name")
    if filter_subjects_of(existing) != filter_subjects_of(wanted):
        found.append("filter_subject")
    for field in COMPARED_FIELDS:
        if getattr(existing, field) != getattr(wanted, field):
            found.append(field)
    if (
        existing.ack_wait is None
        or wanted.ack_wait is None
        or abs(existing.ack_wait - wanted.ack_wait) > ACK_WAIT_TOLERANCE_SECONDS
    ):
        found.append("ack_wait")
    return found


async def ensure_durable_consumer(
    js: JetStreamContext, stream: str, wanted: ConsumerConfig
) -> ConsumerInfo:
    """Create the durable ``wanted`` on ``stream``, accept it, or update what drifted."""
    name = str(wanted.durable_name)
    try:
        info = await js.consumer_info(stream, name)
    except NotFoundError:
        # Two processes starting together both land here: creating with an
        # identical configuration is idempotent on the server.
        info = await js.add_consumer(stream, wanted)
        log.info("consumer created", extra={"consumer": name, "stream": stream})
        return info
    drift = config_differences(wanted, info.config)
    if not drift:
        log.info("consumer exists", extra={"consumer": name, "stream": stream})
        return info
    subjects = filter_subjects_of(wanted)
    updated = info.config.evolve(
        durable_name=name,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
        **{field: getattr(wanted, field) for field in (*COMPARED_FIELDS, "ack_wait")},
    )
    updated.name = name
    try:
        info = await js.add_consumer(stream, updated)
    except APIError as error:
        raise ConsumerConfigError(
            f"consumer {name} on {stream} differs in {', '.join(drift)} "
            f"and the server refused to update it: {error.description}"
        ) from None
    log.warning("consumer updated", extra={"consumer": name, "stream": stream, "changed": drift})
    return info
