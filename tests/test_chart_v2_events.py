"""The chart's V2 -> V1 switch: ``config.syncV2ToV1`` and the NACK Stream and Consumer.

- Off by default: no Stream, no second Consumer, ``SYNC_V2_TO_V1=false`` in the
  bridge and the workers; on, both read ``true`` and the two NACK objects render
  (unless ``nats.v2Events.creation`` is off). Bad values (a non-boolean switch, a
  JetStream name with a dot, a duration string for ``maxAge``, a ``storage`` the
  bridge would refuse) stop the install, naming the key.
- Every rendered NACK object (the buckets and the KV consumer too) validated with
  jsonschema against the openAPIV3Schema of NACK's own CRDs (tests/data/nack/,
  vendored unchanged from nats-io/nack v0.22.4), made strict as ``kubectl apply
  --validate=strict`` is.
- The NACK objects say what the bridge ensures at start-up (sync_core/v2_events.py,
  fed the rendered environment): compared field by field, then for real on a
  nats-server: the stream and consumer created from the NACK specs the way NACK's
  controller translates them, and the bridge's ``ensure_v2_event_capture`` finds
  nothing to change (the two never fight over them).
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from sync_core.nats_client import SyncNats
from sync_core.settings import BridgeSettings, WorkerSettings
from sync_core.v2_events import V2EventCapture, capture_from_settings, ensure_v2_event_capture
from tests.test_chart_keda import strict
from tests.test_deployment import (
    ALL_FEATURES_VALUES,
    CHART_DIR,
    MINIMAL_VALUES,
    REQUIRED_VALUES,
    build_settings,
    container,
    deep_merge,
    deployment,
    load_yaml,
    objects_by_kind,
    render_chart,
    rendered_objects,
    resolve_env,
)

NACK_CRDS = Path(__file__).parent / "data" / "nack" / "crds.yml"
NACK_GROUP = "jetstream.nats.io"
NACK_VERSION = "v1beta2"
FULL_VALUES_FILE = CHART_DIR / "ci" / "full-values.yaml"

STREAM = "committee_events"
V2_CONSUMER = "v1-sync-helper-v2-events-consumer"
KV_CONSUMER = "v1-sync-helper-kv-consumer"
SWITCH_ON: dict[str, Any] = deep_merge(REQUIRED_VALUES, {"config": {"syncV2ToV1": True}})
# Non-default names and sizes: every one must reach both the NACK objects and the bridge.
CUSTOM: dict[str, Any] = deep_merge(
    SWITCH_ON,
    {
        "nats": {
            "v2Events": {
                "stream": "V2_Committee_Events",
                "consumerName": "reverse_consumer",
                "subjects": ["lfx.committee.*", "lfx.committee_member.>", "lfx.extra.>"],
                "maxAge": 3600,
                "maxBytes": 5 * 1024**2,
                "replicas": 3,
            }
        }
    },
)
# A Kubernetes object name: an RFC 1123 DNS subdomain.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Go's time.ParseDuration units, which NACK uses for maxAge and ackWait.
GO_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip
GO_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")


def go_duration(text: str) -> float:
    """Seconds of a Go duration string (``1209600s``, ``1h30m``), as time.ParseDuration reads it."""
    assert text, "an empty duration"
    assert GO_DURATION_PART.sub("", text) == "", f"{text!r} is not a Go duration"
    return sum(float(n) * GO_DURATION_UNITS[unit] for n, unit in GO_DURATION_PART.findall(text))


def test_go_duration_reads_what_go_reads() -> None:
    assert go_duration("1209600s") == 14 * 24 * 3600
    assert go_duration("1h30m") == 5400
    assert go_duration("30s") == 30
    with pytest.raises(AssertionError):
        go_duration("14d")  # Go has no day unit: NACK would refuse it


def nack_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in rendered_objects(values) if o["apiVersion"].startswith(NACK_GROUP + "/")]


def v2_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The V2 -> V1 direction's NACK objects: the Stream and the Consumer on it."""
    return [
        o
        for o in nack_objects(values)
        if o["kind"] == "Stream" or o["spec"].get("durableName") not in (None, KV_CONSUMER)
    ]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def component_env(objects: list[dict[str, Any]], component: str) -> dict[str, str]:
    env = container(deployment(objects, component))["env"]
    secrets = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"]): "x"
               for e in env if "valueFrom" in e}  # fmt: skip
    return resolve_env(env, secrets)


def bridge_capture(values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> V2EventCapture:
    """What the bridge rendered with ``values`` ensures at start-up (its own settings)."""
    env = component_env(rendered_objects(values), "bridge")
    settings = build_settings(BridgeSettings, env, monkeypatch)
    assert isinstance(settings, BridgeSettings)
    return capture_from_settings(settings)


# ------------------------------------------------------------------ the switch


def test_off_by_default_nothing_of_the_direction_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = rendered_objects(REQUIRED_VALUES)
    assert objects_by_kind(objects, "Stream") == {}
    assert list(objects_by_kind(objects, "Consumer")) == [KV_CONSUMER]
    for component in ("bridge", "worker"):
        assert component_env(objects, component)["SYNC_V2_TO_V1"] == "false"
    settings = build_settings(BridgeSettings, component_env(objects, "bridge"), monkeypatch)
    assert settings.model_dump()["sync_v2_to_v1"] is False


def test_switched_on_the_bridge_and_workers_read_it_and_nack_objects_render(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]
) -> None:
    objects = rendered_objects(SWITCH_ON)
    assert list(objects_by_kind(objects, "Stream")) == ["committee-events"]
    assert sorted(objects_by_kind(objects, "Consumer")) == [KV_CONSUMER, V2_CONSUMER]
    bridge_env = component_env(objects, "bridge")
    worker_env = component_env(objects, "worker")
    worker_env["HEIMDALL_PRIVATE_KEY"] = rsa_pems["heimdall"]
    worker_env["AUTH0_PRIVATE_KEY"] = rsa_pems["auth0"]
    bridge = build_settings(BridgeSettings, bridge_env, monkeypatch)
    worker = build_settings(WorkerSettings, worker_env, monkeypatch)
    assert bridge.model_dump()["sync_v2_to_v1"] is True
    assert worker.model_dump()["sync_v2_to_v1"] is True
    assert worker.model_dump()["v2_events_stream"] == STREAM


def test_creation_off_leaves_the_objects_to_the_bridge() -> None:
    values = deep_merge(SWITCH_ON, {"nats": {"v2Events": {"creation": False}}})
    objects = rendered_objects(values)
    assert v2_objects(values) == []
    assert component_env(objects, "bridge")["SYNC_V2_TO_V1"] == "true"


@pytest.mark.parametrize("keep", [True, False])
def test_keep_flag_keeps_stream_and_consumer(keep: bool) -> None:
    objects = v2_objects(deep_merge(SWITCH_ON, {"nats": {"v2Events": {"keep": keep}}}))
    assert sorted(o["kind"] for o in objects) == ["Consumer", "Stream"]
    for obj in objects:
        annotations = obj["metadata"].get("annotations") or {}
        assert (annotations.get("helm.sh/resource-policy") == "keep") is keep
        assert obj["spec"]["preventDelete"] is keep


def test_resource_names_are_kubernetes_names_the_specs_keep_jetstream_names() -> None:
    objects = v2_objects(CUSTOM)
    stream, consumer = only(objects, "Stream"), only(objects, "Consumer")
    for obj in objects:
        assert DNS_SUBDOMAIN.match(obj["metadata"]["name"]), obj["metadata"]["name"]
    assert stream["metadata"]["name"] == "v2-committee-events"
    assert stream["spec"]["name"] == "V2_Committee_Events"
    assert consumer["spec"]["streamName"] == "V2_Committee_Events"
    assert consumer["spec"]["durableName"] == "reverse_consumer"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"syncV2ToV1": "true"}}, "/config/syncV2ToV1': got string, want boolean"),
        ({"nats": {"v2Events": {"maxAge": "14d"}}}, "/nats/v2Events/maxAge'"),
        ({"nats": {"v2Events": {"stream": "committee.events"}}}, "/nats/v2Events/stream'"),
        ({"nats": {"v2Events": {"consumerName": "a b"}}}, "/nats/v2Events/consumerName'"),
        ({"nats": {"v2Events": {"subjects": []}}}, "/nats/v2Events/subjects'"),
        ({"nats": {"v2Events": {"subjects": ["lfx..x"]}}}, "/nats/v2Events/subjects/0'"),
        ({"nats": {"v2Events": {"storage": "memory"}}}, "additional properties 'storage'"),
    ],
)
def test_helm_refuses_bad_v2_events_values_naming_the_key(
    values: dict[str, Any], message: str
) -> None:
    # Refused at install, not by a bridge exiting at start-up or NACK failing later.
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render_chart(deep_merge(SWITCH_ON, values))


# --------------------------------------------------------------- the NACK CRDs


@pytest.fixture(scope="module")
def nack_schemas() -> dict[str, dict[str, Any]]:
    """The strict openAPIV3Schema of each vendored NACK CRD, at the version the chart uses."""
    schemas: dict[str, dict[str, Any]] = {}
    for crd in yaml.safe_load_all(NACK_CRDS.read_text()):
        assert crd["spec"]["group"] == NACK_GROUP
        versions = [v for v in crd["spec"]["versions"] if v["name"] == NACK_VERSION]
        if not versions:
            continue  # StreamTemplate: v1beta1 only, not used
        (version,) = versions
        assert version["served"]
        assert version["storage"]
        schemas[crd["spec"]["names"]["kind"]] = strict(version["schema"]["openAPIV3Schema"])
    assert {"Stream", "Consumer", "KeyValue"} <= set(schemas)
    return schemas


def crd_errors(schemas: dict[str, dict[str, Any]], obj: dict[str, Any]) -> list[str]:
    """What the API server would refuse in ``obj``'s spec (NACK's schemas declare no metadata)."""
    validator = jsonschema.Draft7Validator(schemas[obj["kind"]])
    return [
        f"{obj['kind']} {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors({"spec": obj["spec"]})
    ]


VALUE_SETS = {
    "defaults": REQUIRED_VALUES,
    "switch-on": SWITCH_ON,
    "custom": CUSTOM,
    "all": ALL_FEATURES_VALUES,
    "minimal": MINIMAL_VALUES,
    "full-example": load_yaml(FULL_VALUES_FILE),
}


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_rendered_nack_objects_match_the_nack_crds(
    nack_schemas: dict[str, dict[str, Any]], values_name: str
) -> None:
    objects = nack_objects(VALUE_SETS[values_name])
    for obj in objects:
        assert obj["apiVersion"] == f"{NACK_GROUP}/{NACK_VERSION}"
        assert crd_errors(nack_schemas, obj) == []
    if values_name in ("switch-on", "custom", "all", "full-example"):
        assert {"Stream", "Consumer"} <= {o["kind"] for o in objects}


def test_crd_validation_catches_what_nack_would_refuse(
    nack_schemas: dict[str, dict[str, Any]],
) -> None:
    stream = copy.deepcopy(only(v2_objects(SWITCH_ON), "Stream"))
    stream["spec"]["storage"] = "disk"
    stream["spec"]["maxAgeSeconds"] = 3600
    errors = " ".join(crd_errors(nack_schemas, stream))
    assert "'disk' is not one of ['file', 'memory']" in errors
    assert "'maxAgeSeconds' was unexpected" in errors
    consumer = copy.deepcopy(only(v2_objects(SWITCH_ON), "Consumer"))
    consumer["spec"]["durableName"] = "a.b"
    assert crd_errors(nack_schemas, consumer) != []


# ------------------------------------------------ the NACK objects and the bridge


@pytest.mark.parametrize("values", [SWITCH_ON, CUSTOM], ids=["defaults", "custom"])
def test_nack_objects_say_what_the_bridge_ensures(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = bridge_capture(values, monkeypatch)
    objects = v2_objects(values)
    stream, consumer = only(objects, "Stream")["spec"], only(objects, "Consumer")["spec"]
    wanted_stream = capture.stream_config()
    assert stream["name"] == wanted_stream.name
    assert stream["subjects"] == wanted_stream.subjects
    assert stream["retention"] == "limits"
    assert wanted_stream.retention == RetentionPolicy.LIMITS
    assert stream["storage"] == "file"
    assert wanted_stream.storage == StorageType.FILE
    assert go_duration(stream["maxAge"]) == wanted_stream.max_age
    wanted = capture.consumer_config()
    assert consumer["streamName"] == capture.stream
    assert consumer["durableName"] == wanted.durable_name
    assert consumer["ackPolicy"] == "explicit"
    assert wanted.ack_policy == AckPolicy.EXPLICIT
    assert consumer["deliverPolicy"] == "all"
    assert wanted.deliver_policy == DeliverPolicy.ALL
    assert consumer["maxDeliver"] == wanted.max_deliver
    assert go_duration(consumer["ackWait"]) == wanted.ack_wait
    assert consumer["maxAckPending"] == wanted.max_ack_pending
    # A pull consumer reading the whole stream, as the bridge's.
    assert not wanted.filter_subject
    assert not wanted.filter_subjects
    assert not {"filterSubject", "filterSubjects", "deliverSubject"} & consumer.keys()


# NACK's controller (internal/controller/{stream,consumer}_controller.go at v0.22.4):
# spec field -> server setting, for the fields the chart renders. Connection fields
# (account, preventDelete, …) are the controller's own.
NACK_CONTROLLER_FIELDS = {"account", "preventDelete", "preventUpdate", "servers", "creds", "nkey"}


def nack_stream_config(spec: dict[str, Any]) -> StreamConfig:
    """The stream NACK's streamSpecToConfig makes of ``spec``."""
    translated = {
        "name", "description", "subjects", "retention", "storage", "maxAge", "maxBytes",
        "discard", "replicas",
    }  # fmt: skip
    assert set(spec) - NACK_CONTROLLER_FIELDS <= translated, "a spec field this test ignores"
    return StreamConfig(
        name=spec["name"],
        description=spec.get("description"),
        subjects=list(spec["subjects"]),
        retention=RetentionPolicy(spec["retention"]),
        storage=StorageType(spec["storage"]),
        max_age=go_duration(spec["maxAge"]),
        max_bytes=spec["maxBytes"],
        discard=DiscardPolicy(spec["discard"]),
        # NACK's CRD defaults for what the chart leaves out.
        max_consumers=-1,
        max_msgs=-1,
        max_msg_size=-1,
        num_replicas=spec["replicas"],
    )


def nack_consumer_config(spec: dict[str, Any]) -> ConsumerConfig:
    """The consumer NACK's consumerSpecToConfig makes of ``spec``."""
    translated = {
        "streamName", "durableName", "description", "deliverPolicy", "ackPolicy", "ackWait",
        "maxDeliver", "maxAckPending", "replayPolicy",
    }  # fmt: skip
    assert set(spec) - NACK_CONTROLLER_FIELDS <= translated, "a spec field this test ignores"
    return ConsumerConfig(
        name=spec["durableName"],
        durable_name=spec["durableName"],
        description=spec["description"],
        deliver_policy=DeliverPolicy(spec["deliverPolicy"]),
        ack_policy=AckPolicy(spec["ackPolicy"]),
        ack_wait=go_duration(spec["ackWait"]),
        max_deliver=spec["maxDeliver"],
        max_ack_pending=spec["maxAckPending"],
        replay_policy=ReplayPolicy(spec["replayPolicy"]),
    )


def test_the_bridge_accepts_what_nack_created(
    sync_nats: SyncNats, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A single nats-server has one replica to give: the sizing values otherwise custom.
    values = deep_merge(CUSTOM, {"nats": {"v2Events": {"replicas": 1}}})
    objects = v2_objects(values)
    stream_spec, consumer_spec = only(objects, "Stream")["spec"], only(objects, "Consumer")["spec"]
    js = sync_nats.js
    created_stream = sync_nats.run(js.add_stream(nack_stream_config(stream_spec)))
    created_consumer = sync_nats.run(
        js.add_consumer(stream_spec["name"], nack_consumer_config(consumer_spec))
    )
    capture = bridge_capture(values, monkeypatch)
    with caplog.at_level(logging.INFO, logger="sync_core"):
        stream, consumer = sync_nats.run(ensure_v2_event_capture(js, capture))
    messages = {record.getMessage() for record in caplog.records}
    assert {"stream exists", "consumer exists"} <= messages
    assert not {"stream created", "stream updated", "consumer created", "consumer updated"} & (
        messages
    )
    assert stream.created == created_stream.created
    assert consumer.created == created_consumer.created
    # The sizing only the chart sets survives the bridge's start-up.
    config = sync_nats.run(js.stream_info(stream_spec["name"])).config
    assert config.max_bytes == stream_spec["maxBytes"]
    assert config.discard == DiscardPolicy.OLD
