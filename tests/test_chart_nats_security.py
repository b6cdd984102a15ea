"""The chart's secured-NATS values: Secrets mounted read-only, the variables naming their files.

Rendered with Helm's own engine and checked against the Kubernetes schemas,
like the rest of the chart (tests/test_deployment.py). Every process gets the
same files and variables: bridge, workers and Flower all load ``NatsSettings``,
which refuses a variable whose file is missing.
"""

from __future__ import annotations

import posixpath
from typing import Any

import kubernetes_validate
import pytest

from tests.test_deployment import (
    FLOWER_SECRET,
    KUBERNETES_VERSIONS,
    REQUIRED_VALUES,
    container,
    deep_merge,
    deployment,
    rendered_objects,
)

COMPONENTS = ("bridge", "worker", "flower")
FILE_VARIABLES = ("NATS_CREDS", "NATS_NKEY_SEED", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY")
WITH_FLOWER = deep_merge(
    REQUIRED_VALUES, {"flower": {"enabled": True, "basicAuth": {"existingSecret": FLOWER_SECRET}}}
)
SECURED = deep_merge(
    WITH_FLOWER,
    {
        "config": {
            "natsUrlSecret": {"name": "nats-url", "key": "url"},
            "natsAuth": {"credsSecret": {"name": "nats-user", "key": "sync.creds"}},
            "natsTls": {
                "caSecret": {"name": "nats-ca"},
                "clientCertSecret": {"name": "nats-client-tls"},
            },
        }
    },
)
WITH_NKEY = deep_merge(
    WITH_FLOWER, {"config": {"natsAuth": {"nkeySeedSecret": {"name": "nats-nkey"}}}}
)


def env_of(values: dict[str, Any], component: str) -> dict[str, Any]:
    """The container's env entries by name."""
    entries = container(deployment(rendered_objects(values), component))["env"]
    return {entry["name"]: entry for entry in entries}


def mounted_files(deploy: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret, key) of every file a Secret volume mounts."""
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for mount in container(deploy).get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount.get("readOnly") is True, mount
        for item in secret["items"]:
            path = posixpath.join(mount["mountPath"], item["path"])
            files[path] = (secret["secretName"], item["key"])
    return files


@pytest.mark.parametrize("component", COMPONENTS)
def test_nothing_is_mounted_by_default(component: str) -> None:
    deploy = deployment(rendered_objects(WITH_FLOWER), component)
    env = {entry["name"]: entry for entry in container(deploy)["env"]}
    assert not set(FILE_VARIABLES) & set(env)
    assert env["NATS_URL"]["value"] == "nats://nats.lfx.svc.cluster.local:4222"
    assert mounted_files(deploy) == {}


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_variable_names_a_file_mounted_from_its_secret(component: str) -> None:
    deploy = deployment(rendered_objects(SECURED), component)
    env = {entry["name"]: entry for entry in container(deploy)["env"]}
    files = mounted_files(deploy)

    assert env["NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nats-url", "key": "url"}
    assert files[env["NATS_CREDS"]["value"]] == ("nats-user", "sync.creds")
    assert files[env["NATS_TLS_CA"]["value"]] == ("nats-ca", "ca.crt")
    assert files[env["NATS_TLS_CERT"]["value"]] == ("nats-client-tls", "tls.crt")
    assert files[env["NATS_TLS_KEY"]["value"]] == ("nats-client-tls", "tls.key")
    assert "NATS_NKEY_SEED" not in env
    assert len(files) == 4


def test_an_nkey_seed_is_mounted_as_a_file() -> None:
    deploy = deployment(rendered_objects(WITH_NKEY), "worker")
    env = {entry["name"]: entry for entry in container(deploy)["env"]}
    assert mounted_files(deploy)[env["NATS_NKEY_SEED"]["value"]] == ("nats-nkey", "nkey.seed")


def test_secret_files_are_readable_by_the_app_group_only() -> None:
    deploy = deployment(rendered_objects(SECURED), "bridge")
    modes = {
        volume["name"]: volume["secret"]["defaultMode"]
        for volume in deploy["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    }
    assert modes == {"nats-creds": 0o440, "nats-tls-ca": 0o440, "nats-tls-client": 0o440}


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", [SECURED, WITH_NKEY], ids=["creds-and-tls", "nkey"])
def test_secured_objects_match_the_kubernetes_schemas(
    values: dict[str, Any], kubernetes_version: str
) -> None:
    checked = 0
    for obj in rendered_objects(values, kubernetes_version):
        if obj["apiVersion"].startswith("jetstream.nats.io/"):
            continue
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        checked += obj["kind"] == "Deployment"
    assert checked == len(COMPONENTS)
