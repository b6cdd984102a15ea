"""The durable consumer: created, accepted as the Helm chart made it, or updated."""

from __future__ import annotations

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bridge.consumer import ConsumerConfigError, ConsumerSpec, ensure_consumer
from sync_core.nats_client import SyncNats

NAME = "v1-sync-helper-kv-consumer"
STREAM = "KV_v1-objects"
SPEC = ConsumerSpec(NAME, "v1-objects")


def _helm_style_config(**changes: object) -> ConsumerConfig:
    """The consumer as a NACK ``Consumer`` resource declares it: durable name, extras."""
    config = ConsumerConfig(
        durable_name=NAME,
        description="v1-sync-helper KV consumer (managed by Helm)",
        filter_subject="$KV.v1-objects.>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_deliver=3,
        ack_wait=30.0,
        max_ack_pending=1000,
        metadata={"managed-by": "helm"},
    )
    return config.evolve(**changes)


def test_creates_the_documented_consumer(sync_nats: SyncNats) -> None:
    info = sync_nats.run(ensure_consumer(sync_nats.js, SPEC))
    config = sync_nats.run(sync_nats.js.consumer_info(STREAM, NAME)).config
    assert info.name == NAME
    assert config.durable_name == NAME
    assert config.filter_subject == "$KV.v1-objects.>"
    assert config.ack_policy == AckPolicy.EXPLICIT
    assert config.deliver_policy == DeliverPolicy.ALL
    assert config.max_deliver == 3
    assert config.ack_wait == 30.0
    assert config.max_ack_pending == 1000


def test_accepts_the_helm_consumer_unchanged(sync_nats: SyncNats) -> None:
    created = sync_nats.run(sync_nats.js.add_consumer(STREAM, _helm_style_config()))
    info = sync_nats.run(ensure_consumer(sync_nats.js, SPEC))
    assert info.created == created.created
    assert info.config.description == "v1-sync-helper KV consumer (managed by Helm)"
    assert info.config.metadata is not None
    assert info.config.metadata.get("managed-by") == "helm"
    # A second bridge starting later accepts it too.
    assert sync_nats.run(ensure_consumer(sync_nats.js, SPEC)).created == created.created


def test_updates_drifted_settings_and_keeps_the_rest(sync_nats: SyncNats) -> None:
    sync_nats.run(
        sync_nats.js.add_consumer(STREAM, _helm_style_config(max_ack_pending=50, ack_wait=5.0))
    )
    info = sync_nats.run(ensure_consumer(sync_nats.js, SPEC))
    assert info.config.max_ack_pending == 1000
    assert info.config.ack_wait == 30.0
    assert info.config.description == "v1-sync-helper KV consumer (managed by Helm)"


def test_a_setting_the_server_cannot_change_stops_start_up(sync_nats: SyncNats) -> None:
    sync_nats.run(
        sync_nats.js.add_consumer(STREAM, _helm_style_config(deliver_policy=DeliverPolicy.NEW))
    )
    with pytest.raises(ConsumerConfigError, match="deliver_policy"):
        sync_nats.run(ensure_consumer(sync_nats.js, SPEC))
