"""The chart's KEDA option: a ScaledObject scaling the workers on the Celery queue's depth.

- The rendered ScaledObject and TriggerAuthentication validated with jsonschema
  against the openAPIV3Schema of KEDA's own CRDs (tests/data/keda/, vendored
  unchanged from kedacore/keda v2.20.2), made strict as ``kubectl apply
  --validate=strict`` is: a field the CRD does not declare is an error, not
  something the API server silently prunes.
- The trigger's metadata and the authentication parameters checked against the
  names KEDA's Redis scaler reads (pkg/scalers/redis_scaler.go at v2.20.2).
- The list KEDA measures is the list the tasks go to: tasks enqueued the
  bridge's way into a real valkey, then counted the scaler's way (its Lua
  script, on the rendered address, database and list name, with the password
  the TriggerAuthentication points at).
- The CPU HorizontalPodAutoscaler and the ScaledObject are never both rendered;
  with KEDA the Deployment leaves the replica count to KEDA's HPA.

A KEDA operator acting on the objects needs a cluster and is not tested here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import redis
import yaml

from bridge.changes import KvChange
from operations.enqueue import TaskQueue
from sandbox.servers import ValkeyServer
from tests.test_deployment import (
    REQUIRED_VALUES,
    deep_merge,
    deployment,
    objects_by_kind,
    render_chart,
    rendered_objects,
)

KEDA_CRDS = Path(__file__).parent / "data" / "keda"
KEDA_VERSION = "v1alpha1"
KEDA_ON: dict[str, Any] = deep_merge(REQUIRED_VALUES, {"worker": {"keda": {"enabled": True}}})

# What KEDA's Redis scaler reads (pkg/scalers/redis_scaler.go, v2.20.2, the
# `keda:"name=…, order=…"` tags of redisMetadata and redisConnectionInfo).
REDIS_TRIGGER_METADATA = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "sentinelUsername",
    "sentinelMaster", "unsafeSsl", "listLength", "activationListLength", "listName",
    "databaseIndex", "enableTLS",
}  # fmt: skip
REDIS_AUTH_PARAMETERS = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password",
    "sentinelUsername", "sentinelPassword", "sentinelMaster", "tls", "cert", "key",
    "keyPassword", "ca",
}  # fmt: skip
# Secrets read by the scaler from its metadata as well, which must only come from a Secret.
SECRET_PARAMETERS = {"password", "sentinelPassword", "keyPassword", "key"}
# The scaler's length query (same file): LLEN for a list, or 0 for a missing key.
KEDA_LIST_LENGTH_SCRIPT = """
    local listName = KEYS[1]
    local listType = redis.call('type', listName).ok
    if listType == 'zset' then
        return redis.call('zcard', listName)
    elseif listType == 'set' then
        return redis.call('scard', listName)
    elseif listType == 'hash' then
        return redis.call('hlen', listName)
    elseif listType == 'list' or listType == 'none' then
        return redis.call('llen', listName)
    else
        return redis.error_reply('ERR unsupported key type: ' .. listType)
    end
"""


def strict(schema: Any) -> Any:
    """``schema`` with every declared object closed, as strict validation on apply treats it."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


def crd_schema(kind_file: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of one vendored KEDA CRD, for the version the chart uses."""
    crd = yaml.safe_load((KEDA_CRDS / kind_file).read_text())
    assert crd["spec"]["group"] == "keda.sh"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == KEDA_VERSION]
    assert version["served"]
    assert version["storage"]
    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return schema


@pytest.fixture(scope="module")
def keda_schemas() -> dict[str, dict[str, Any]]:
    return {
        "ScaledObject": crd_schema("keda.sh_scaledobjects.yaml"),
        "TriggerAuthentication": crd_schema("keda.sh_triggerauthentications.yaml"),
    }


def crd_errors(schemas: dict[str, dict[str, Any]], obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schemas[obj["kind"]])
    return [
        f"{obj['kind']} {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def keda_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in rendered_objects(values) if o["apiVersion"].startswith("keda.sh/")]


def scaled_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = objects_by_kind(objects, "ScaledObject").values()
    return found


def trigger(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = scaled_object(objects)["spec"]["triggers"]
    assert isinstance(found, dict)
    return found


SENTINEL_VALUES = deep_merge(
    KEDA_ON,
    {
        "config": {
            "redisUrl": "sentinel://s1.lfx:26379/2;sentinel://s2.lfx:26379/2",
            "redisSentinelMaster": "broker",
            "redisSentinelPasswordSecret": {"name": "sentinel", "key": "pw"},
        },
        "worker": {"keda": {"redis": {"passwordSecret": {"name": "redis-pw"}}}},
    },
)
SECRET_URL_VALUES = deep_merge(
    KEDA_ON,
    {
        "config": {"redisUrlSecret": {"name": "redis-url"}},
        "worker": {
            "keda": {
                "redis": {
                    "address": "redis-master.lfx:6379",
                    "databaseIndex": 3,
                    "enableTLS": True,
                    "passwordSecret": {"name": "redis-pw", "key": "password"},
                },
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
            }
        },
    },
)
KEDA_VALUE_SETS = {
    "defaults": KEDA_ON,
    "rediss": deep_merge(KEDA_ON, {"config": {"redisUrl": "rediss://broker.lfx/4"}}),
    "sentinel": SENTINEL_VALUES,
    "secret-url": SECRET_URL_VALUES,
}


# ------------------------------------------------------------- the CRD schemas


@pytest.mark.parametrize("values_name", sorted(KEDA_VALUE_SETS))
def test_rendered_keda_objects_match_the_keda_crds(
    keda_schemas: dict[str, dict[str, Any]], values_name: str
) -> None:
    objects = keda_objects(KEDA_VALUE_SETS[values_name])
    assert "ScaledObject" in {o["kind"] for o in objects}
    for obj in objects:
        assert obj["apiVersion"] == f"keda.sh/{KEDA_VERSION}"
        assert crd_errors(keda_schemas, obj) == []


def test_crd_validation_catches_what_keda_would_refuse(
    keda_schemas: dict[str, dict[str, Any]],
) -> None:
    good = scaled_object(keda_objects(SECRET_URL_VALUES))
    bad = copy.deepcopy(good)
    bad["spec"]["minReplicas"] = 1  # HPA's name, not KEDA's
    bad["spec"]["triggers"][0]["metadata"]["listLength"] = 200  # metadata values are strings
    bad["spec"]["triggers"][0]["authenticationRef"]["kind"] = "Secret"
    bad["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behaviour"] = {}
    errors = " ".join(crd_errors(keda_schemas, bad))
    assert "'minReplicas' was unexpected" in errors
    assert "200 is not of type 'string'" in errors
    assert "'Secret' is not one of" in errors
    assert "'behaviour' was unexpected" in errors
    (auth,) = objects_by_kind(keda_objects(SECRET_URL_VALUES), "TriggerAuthentication").values()
    del auth["spec"]["secretTargetRef"][0]["parameter"]
    assert "'parameter' is a required property" in " ".join(crd_errors(keda_schemas, auth))


@pytest.mark.parametrize("values_name", sorted(KEDA_VALUE_SETS))
def test_trigger_uses_names_the_redis_scaler_reads(values_name: str) -> None:
    objects = keda_objects(KEDA_VALUE_SETS[values_name])
    found = trigger(objects)
    assert found["type"] in ("redis", "redis-sentinel")
    assert set(found["metadata"]) <= REDIS_TRIGGER_METADATA
    assert not set(found["metadata"]) & SECRET_PARAMETERS  # never a password in the object
    for auth in objects_by_kind(objects, "TriggerAuthentication").values():
        assert found["authenticationRef"] == {"name": auth["metadata"]["name"]}
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["parameter"] in REDIS_AUTH_PARAMETERS


# ---------------------------------------------------- what the chart renders


def test_keda_is_off_by_default() -> None:
    objects = rendered_objects(REQUIRED_VALUES)
    assert keda_objects(REQUIRED_VALUES) == []
    assert deployment(objects, "worker")["spec"]["replicas"] == 2


def test_scaled_object_targets_the_worker_deployment_on_the_celery_queue() -> None:
    values = deep_merge(KEDA_ON, {"config": {"celeryQueue": "v1-sync"}})
    objects = rendered_objects(values)
    worker = deployment(objects, "worker")
    spec = scaled_object(objects)["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": worker["metadata"]["name"],
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
    assert "replicas" not in worker["spec"]  # KEDA's HPA owns the count
    assert objects_by_kind(objects, "HorizontalPodAutoscaler") == {}
    metadata = trigger(objects)["metadata"]
    assert metadata["listName"] == "v1-sync"
    assert metadata["listLength"] == "200"
    assert metadata["address"] == "redis.lfx.svc.cluster.local:6379"
    assert (metadata["databaseIndex"], metadata["enableTLS"]) == ("0", "false")
    assert "authenticationRef" not in trigger(objects)
    assert objects_by_kind(objects, "TriggerAuthentication") == {}


def test_address_database_and_tls_come_from_the_redis_url() -> None:
    metadata = trigger(rendered_objects(KEDA_VALUE_SETS["rediss"]))["metadata"]
    assert metadata["address"] == "broker.lfx:6379"
    assert (metadata["databaseIndex"], metadata["enableTLS"]) == ("4", "true")


def test_sentinel_group_uses_the_sentinel_scaler_and_both_passwords() -> None:
    objects = rendered_objects(SENTINEL_VALUES)
    found = trigger(objects)
    assert found["type"] == "redis-sentinel"
    assert found["metadata"]["addresses"] == "s1.lfx:26379,s2.lfx:26379"
    assert found["metadata"]["sentinelMaster"] == "broker"
    assert found["metadata"]["databaseIndex"] == "2"
    (auth,) = objects_by_kind(objects, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "redis-pw", "key": "redis-password"},
        {"parameter": "sentinelPassword", "name": "sentinel", "key": "pw"},
    ]


def test_explicit_connection_values_win() -> None:
    objects = rendered_objects(SECRET_URL_VALUES)
    metadata = trigger(objects)["metadata"]
    assert metadata["address"] == "redis-master.lfx:6379"
    assert (metadata["databaseIndex"], metadata["enableTLS"]) == ("3", "true")
    behavior = scaled_object(objects)["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert behavior == {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"worker": {"keda": {"minReplicaCount": 5, "maxReplicaCount": 3}}},
            "worker.keda.minReplicaCount (5) is above worker.keda.maxReplicaCount (3)",
        ),
        (
            {"worker": {"autoscaling": {"enabled": True}}},
            "worker.keda.enabled and worker.autoscaling.enabled are exclusive",
        ),
        (
            {"config": {"redisUrlSecret": {"name": "redis-url"}}},
            "worker.keda.redis.address is required when config.redisUrlSecret is set",
        ),
        (
            {"config": {"redisUrl": "redis://:hunter2@redis.lfx:6379/0"}},
            "config.redisUrl carries a password: set worker.keda.redis.passwordSecret",
        ),
        (
            {"config": {"redisUrl": "unix:///run/redis.sock"}},
            "worker.keda.redis.address is required when config.redisUrl is a unix socket",
        ),
    ],
)
def test_chart_refuses_what_keda_cannot_do(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)) as raised:
        render_chart(deep_merge(KEDA_ON, values))
    assert "hunter2" not in str(raised.value)


# ------------------------------------------- the list KEDA counts, for real


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[tuple[ValkeyServer, str]]:
    """A real valkey that wants a password."""
    password = "broker-secret"
    server = ValkeyServer(tmp_path / "valkey", extra_args=("--requirepass", password))
    server.start()
    try:
        yield server, password
    finally:
        server.stop()


def keda_list_length(objects: list[dict[str, Any]], secrets: dict[tuple[str, str], str]) -> int:
    """What KEDA's Redis scaler reads for the rendered trigger: its script, its connection."""
    found = trigger(objects)
    metadata = found["metadata"]
    password = None
    for auth in objects_by_kind(objects, "TriggerAuthentication").values():
        assert found["authenticationRef"]["name"] == auth["metadata"]["name"]
        for ref in auth["spec"]["secretTargetRef"]:
            if ref["parameter"] == "password":
                password = secrets[(ref["name"], ref["key"])]
    host, port = metadata["address"].rsplit(":", 1)
    client = redis.Redis(
        host=host, port=int(port), db=int(metadata["databaseIndex"]), password=password
    )
    try:
        return int(client.eval(KEDA_LIST_LENGTH_SCRIPT, 1, metadata["listName"]))
    finally:
        client.close()


def enqueue(url: str, queue: str, count: int) -> None:
    """``count`` sync tasks published the bridge's way (operations' TaskQueue, same encoder)."""
    with TaskQueue(url, queue) as tasks:
        tasks.publish([KvChange(f"project.sfid{n}", n + 1, "PUT") for n in range(count)])


def test_keda_counts_the_tasks_waiting_in_the_queue(redis_server: ValkeyServer) -> None:
    values = deep_merge(
        KEDA_ON, {"config": {"redisUrl": redis_server.url, "celeryQueue": "v1-sync"}}
    )
    objects = rendered_objects(values)
    assert keda_list_length(objects, {}) == 0
    enqueue(redis_server.url, "v1-sync", 7)
    assert keda_list_length(objects, {}) == 7
    # Another queue's tasks do not count.
    enqueue(redis_server.url, "other", 3)
    assert keda_list_length(objects, {}) == 7


def test_keda_reads_the_queue_with_the_password_secret(
    password_redis: tuple[ValkeyServer, str],
) -> None:
    server, password = password_redis
    url = f"redis://:{password}@127.0.0.1:{server.port}/0"
    values = deep_merge(
        KEDA_ON,
        {
            "config": {"redisUrlSecret": {"name": "redis-url"}},
            "worker": {
                "keda": {
                    "redis": {
                        "address": f"127.0.0.1:{server.port}",
                        "passwordSecret": {"name": "redis-pw", "key": "password"},
                    }
                }
            },
        },
    )
    objects = rendered_objects(values)
    enqueue(url, "celery", 4)
    assert keda_list_length(objects, {("redis-pw", "password"): password}) == 4
    with pytest.raises(redis.AuthenticationError):
        keda_list_length(objects, {("redis-pw", "password"): "wrong"})
