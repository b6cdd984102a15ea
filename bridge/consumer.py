"""The durable JetStream pull consumer the bridges share.

Start-up creates it, or accepts it as it is when it already has the
documented settings (the Helm chart's NACK ``Consumer`` creates it with the
same ones), or updates the documented settings in place when they drifted,
keeping whatever else the existing consumer carries (description, metadata,
replicas). A setting the server cannot change in place (the deliver policy)
stops the bridge with a message saying which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from bridge.changes import subject_prefix

log = logging.getLogger(__name__)

MAX_DELIVER = 3
ACK_WAIT_SECONDS = 30.0
MAX_ACK_PENDING = 1000


class ConsumerConfigError(RuntimeError):
    """The existing consumer differs in a way the server will not update."""


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """The documented consumer settings (the tests shorten the ack wait)."""

    name: str
    bucket: str
    max_deliver: int = MAX_DELIVER
    ack_wait: float = ACK_WAIT_SECONDS
    max_ack_pending: int = MAX_ACK_PENDING

    @property
    def stream(self) -> str:
        """The KV bucket's stream: ``KV_{bucket}``."""
        return f"KV_{self.bucket}"

    @property
    def filter_subject(self) -> str:
        """Every key of the bucket: ``$KV.{bucket}.>``."""
        return subject_prefix(self.bucket) + ">"

    def config(self) -> ConsumerConfig:
        """The full configuration of a new consumer."""
        return ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=self.max_deliver,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
        )


def differences(spec: ConsumerSpec, existing: ConsumerConfig) -> list[str]:
    """The documented settings on which ``existing`` differs from ``spec``."""
    wanted = spec.config()
    found: list[str] = []
    if existing.durable_name != spec.name:
        found.append("durable_name")
    subjects = existing.filter_subjects or (
        [existing.filter_subject] if existing.filter_subject else []
    )
    if subjects != [spec.filter_subject]:
        found.append("filter_subject")
    for field in ("ack_policy", "deliver_policy", "max_deliver", "max_ack_pending"):
        if getattr(existing, field) != getattr(wanted, field):
            found.append(field)
    if existing.ack_wait is None or abs(existing.ack_wait - spec.ack_wait) > 1e-3:
        found.append("ack_wait")
    return found


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> ConsumerInfo:
    """Create the consumer, accept it as it is, or update the settings that drifted."""
    try:
        info = await js.consumer_info(spec.stream, spec.name)
    except NotFoundError:
        # Two bridges starting together both land here: creating with an
        # identical configuration is idempotent on the server.
        info = await js.add_consumer(spec.stream, spec.config())
        log.info("consumer created", extra={"consumer": spec.name, "stream": spec.stream})
        return info
    drift = differences(spec, info.config)
    if not drift:
        log.info("consumer exists", extra={"consumer": spec.name, "stream": spec.stream})
        return info
    wanted = spec.config()
    updated = info.config.evolve(
        durable_name=spec.name,
        filter_subject=spec.filter_subject,
        filter_subjects=None,
        ack_policy=wanted.ack_policy,
        deliver_policy=wanted.deliver_policy,
        max_deliver=wanted.max_deliver,
        ack_wait=wanted.ack_wait,
        max_ack_pending=wanted.max_ack_pending,
    )
    updated.name = spec.name
    try:
        info = await js.add_consumer(spec.stream, updated)
    except APIError as error:
        raise ConsumerConfigError(
            f"consumer {spec.name} on {spec.stream} differs in {', '.join(drift)} "
            f"and the server refused to update it: {error.description}"
        ) from None
    log.warning(
        "consumer updated",
        extra={"consumer": spec.name, "stream": spec.stream, "changed": drift},
    )
    return info
