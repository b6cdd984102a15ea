"""The durable JetStream pull consumer the bridges share.

Start-up creates it, or accepts it as it is when it already has the
documented settings (the Helm chart's NACK ``Consumer`` creates it with the
same ones), or updates the documented settings in place when they drifted,
keeping whatever else the existing consumer carries (description, metadata,
replicas). A setting the server cannot change in place (the deliver policy)
stops the bridge with a message saying which (``ConsumerConfigError``).
The path is ``sync_core.durable_consumer``'s, shared with the V2 events consumer.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from bridge.changes import subject_prefix
from sync_core.durable_consumer import (
    ConsumerConfigError,
    config_differences,
    ensure_durable_consumer,
)

MAX_DELIVER = 3
ACK_WAIT_SECONDS = 30.0
MAX_ACK_PENDING = 1000

__all__ = ["ConsumerConfigError", "ConsumerSpec", "differences", "ensure_consumer"]


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
    return config_differences(spec.config(), existing)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> ConsumerInfo:
    """Create the consumer, accept it as it is, or update the settings that drifted."""
    return await ensure_durable_consumer(js, spec.stream, spec.config())
