"""Checks of the deployment files that run without a Docker engine or a cluster.

- yamllint over docker-compose.yml and the chart's Chart.yaml and values.yaml;
- docker-compose.yml against the Compose Specification JSON schema (the copy
  check-jsonschema ships, taken from compose-spec/compose-spec), and its
  environment against the settings classes;
- the Helm chart statically (every ``.Values`` path exists, templates are
  balanced, values.yaml documents every key), then for real: Helm's own
  linter and renderer (helm-python-sdk binds Helm's Go SDK, no helm binary),
  the rendered objects validated against the Kubernetes OpenAPI schemas
  (kubernetes-validate) and the NACK fields (the NACK CRDs themselves in
  tests/test_chart_v2_events.py), and the rendered environment fed
  to the settings classes;
- the Dockerfile: hadolint, and its runtime stage (non-root, no compilers or
  dev extra, entrypoint ``v1-sync-helper``).

Building the image, ``docker compose up`` and installing the chart need a
Docker engine and a cluster: docs/deployment.md says what remains to check.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from yamllint import linter
from yamllint.config import YamlLintConfig

from sandbox.__main__ import build_parser, build_sandbox
from sync_core.settings import (
    BridgeSettings,
    FlowerSettings,
    WorkerSettings,
    load_rsa_private_key,
)

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "charts" / "lfx-v1-sync-helper"
TEMPLATES_DIR = CHART_DIR / "templates"
VALUES_FILE = CHART_DIR / "values.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
YAMLLINT_CONFIG = ROOT / ".yamllint"
HADOLINT = Path(sys.executable).parent / "hadolint"

RELEASE = "sync"
NAMESPACE = "lfx"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas here.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

# The values an install must give: the Secrets of the worker's keys.
HEIMDALL_SECRET = "v1-sync-helper-heimdall"
AUTH0_SECRET = "v1-sync-helper-auth0"
FLOWER_SECRET = "v1-sync-helper-flower"
REQUIRED_VALUES: dict[str, Any] = {
    "heimdall": {"existingSecret": HEIMDALL_SECRET},
    "auth0": {"existingSecret": AUTH0_SECRET},
}
# Every optional feature switched on, so that every template branch renders.
ALL_FEATURES_VALUES: dict[str, Any] = {
    **REQUIRED_VALUES,
    "imagePullSecrets": [{"name": "registry"}],
    "commonLabels": {"team": "lfx"},
    "serviceAccount": {"annotations": {"example.com/role": "sync"}},
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    # syncV2ToV1: the V2 -> V1 direction's Stream and Consumer (tests/test_chart_v2_events.py).
    "config": {"redisUrlSecret": {"name": "redis-url"}, "debug": True, "syncV2ToV1": True},
    "heimdall": {"existingSecret": HEIMDALL_SECRET, "keyId": "kid-1"},
    "auth0": {"existingSecret": AUTH0_SECRET, "baseUrl": "https://auth.example.com"},
    "nats": {"account": "lfx"},
    "bridge": {
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "nodeSelector": {"pool": "sync"},
        "tolerations": [{"key": "sync", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/component": "bridge"}
                            },
                        },
                    }
                ]
            }
        },
    },
    "worker": {
        "autoscaling": {"enabled": True},
        "podAnnotations": {"prometheus.io/port": "9100"},
        "nodeSelector": {"pool": "sync"},
        "tolerations": [{"key": "sync", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "flower": {
        "enabled": True,
        "basicAuth": {"existingSecret": FLOWER_SECRET},
        "persistence": {"enabled": True, "storageClass": "standard"},
        "nodeSelector": {"pool": "ops"},
        "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {},
    },
}
# Every optional resource switched off.
MINIMAL_VALUES: dict[str, Any] = {
    **REQUIRED_VALUES,
    "serviceAccount": {"create": False, "name": "existing-account"},
    "sync": {"committeeServiceUrl": ""},
    "bridge": {"pdb": {"enabled": False}},
    "worker": {"pdb": {"enabled": False}},
    "nats": {
        "objectsBucket": {"creation": False},
        "mappingsBucket": {"creation": False},
        "kvConsumer": {"creation": False},
    },
}
VALUE_SETS = {"defaults": REQUIRED_VALUES, "all": ALL_FEATURES_VALUES, "minimal": MINIMAL_VALUES}

# The documented consumer (README.md, "What it does"; issue 3): the bridge creates it the same way.
DOCUMENTED_CONSUMER = {
    "durableName": "v1-sync-helper-kv-consumer",
    "streamName": "KV_v1-objects",
    "filterSubject": "$KV.v1-objects.>",
    "ackPolicy": "explicit",
    "deliverPolicy": "all",
    "maxDeliver": 3,
    "ackWait": "30s",
    "maxAckPending": 1000,
}
GIB = 1024**3
DOCUMENTED_BUCKETS = {
    "v1-objects": {"maxBytes": 10 * GIB, "history": 20},
    "v1-mappings": {"maxBytes": 2 * GIB, "history": 1},
    "v1-sync-state": {"maxBytes": 2 * GIB, "history": 1},
}

# NACK v1beta2 spec fields (nats-io/nack pkg/jetstream/apis/jetstream/v1beta2),
# with their JSON types, for the fields this chart may set.
NACK_COMMON_FIELDS = {
    "account": str,
    "servers": list,
    "creds": str,
    "nkey": str,
    "preventDelete": bool,
    "preventUpdate": bool,
}
NACK_SPEC_FIELDS: dict[str, dict[str, type]] = {
    "KeyValue": {
        **NACK_COMMON_FIELDS,
        "bucket": str,
        "description": str,
        "maxValueSize": int,
        "history": int,
        "ttl": str,
        "maxBytes": int,
        "storage": str,
        "replicas": int,
        "compression": bool,
    },
    "Stream": {
        **NACK_COMMON_FIELDS,
        "name": str,
        "description": str,
        "subjects": list,
        "retention": str,
        "storage": str,
        "maxAge": str,
        "maxBytes": int,
        "discard": str,
        "replicas": int,
    },
    "Consumer": {
        **NACK_COMMON_FIELDS,
        "streamName": str,
        "durableName": str,
        "description": str,
        "ackPolicy": str,
        "ackWait": str,
        "deliverPolicy": str,
        "filterSubject": str,
        "maxAckPending": int,
        "maxDeliver": int,
        "replayPolicy": str,
        "replicas": int,
    },
}
NACK_ENUMS = {
    "storage": {"file", "memory"},
    "ackPolicy": {"none", "all", "explicit"},
    "deliverPolicy": {"all", "last", "new", "byStartSequence", "byStartTime"},
    "replayPolicy": {"instant", "original"},
    "retention": {"limits", "interest", "workqueue"},
    "discard": {"old", "new"},
}

# Environment a process reads that is not a settings field.
NON_SETTINGS_ENV = {"WORKER_CONCURRENCY"}

COMPILER_PACKAGES = re.compile(
    r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3?-dev|libc6?-dev|libpq-dev|cargo|rustc)\b"
)


# --------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    """One YAML document (merge keys resolved)."""
    return yaml.safe_load(path.read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, nested dictionaries merged (as Helm does)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_chart(values: dict[str, Any], kube_version: str | None = None) -> dict[str, str]:
    """Helm's own offline render of the chart: template path -> manifest text.

    ``kube_version`` is the cluster version the templates see in
    ``.Capabilities.KubeVersion`` (default: Helm's built-in one, a recent release).
    """
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        if kube_version is None:
            return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return render_for_kubernetes(chart, values, kube_version)


def render_for_kubernetes(
    chart: helm_python.Chart, values: dict[str, Any], kube_version: str
) -> dict[str, str]:
    """``chart`` rendered as for a cluster of ``kube_version`` (``helm template --kube-version``).

    Private parts of helm-python-sdk (pinned ==0.2.2): ``Chart.render`` does not
    pass the native renderer's ``kube_version`` option on, so this calls
    ``helm_python._native.call_string("helm_render", chart._raw(), ...)`` as
    ``Chart.render`` does, with that option added.
    test_render_for_kubernetes_still_sets_the_capabilities guards it.
    """
    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{kube_version}",
    }
    rendered = helm_python._native.call_string(
        "helm_render", chart._raw(), json.dumps(values), json.dumps(options)
    )
    manifests: dict[str, str] = json.loads(rendered)
    return manifests


def rendered_objects(
    values: dict[str, Any], kube_version: str | None = None
) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders with ``values``."""
    objects: list[dict[str, Any]] = []
    for path, text in render_chart(values, kube_version).items():
        if path.endswith(".txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def objects_by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def deployment(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    """The Deployment of one component (bridge, worker, flower)."""
    found = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {component} Deployment, got {len(found)}"
    return found[0]


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    """The single container of a Deployment."""
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def field_env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """The environment variable names a settings class reads."""
    return {name.upper() for name in settings_cls.model_fields}


ALL_SETTINGS_ENV = (
    field_env_names(BridgeSettings)
    | field_env_names(WorkerSettings)
    | field_env_names(FlowerSettings)
)


def build_settings(
    settings_cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    """``settings_cls`` from exactly ``env`` (nothing leaks in from the test's environment)."""
    for name in ALL_SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_cls()


INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if operator in ("-", ":-"):
            return argument
        if operator in ("?", ":?"):
            raise ValueError(f"{name}: {argument}")
        return ""

    return INTERPOLATION.sub(substitute, text)


def map_strings(node: Any, function: Callable[[str], Any]) -> Any:
    """``node`` with ``function`` applied to every string value (not to keys), as Compose does."""
    if isinstance(node, dict):
        return {key: map_strings(value, function) for key, value in node.items()}
    if isinstance(node, list):
        return [map_strings(item, function) for item in node]
    return function(node) if isinstance(node, str) else node


def compose_variables() -> set[str]:
    """Every variable docker-compose.yml substitutes."""
    found: set[str] = set()

    def collect(text: str) -> str:
        found.update(m.group(1) for m in INTERPOLATION.finditer(text) if m.group(1))
        return text

    map_strings(load_yaml(COMPOSE_FILE), collect)
    return found


def compose_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with ``env`` (default: no .env, the defaults)."""
    config: dict[str, Any] = map_strings(
        load_yaml(COMPOSE_FILE), lambda text: interpolate(text, env or {})
    )
    return config


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings (mapping or list form)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


# ------------------------------------------------------------------ yamllint


def yamllint_problems(path: Path, text: str | None = None) -> list[str]:
    """yamllint findings (errors and warnings) with the repository's configuration."""
    config = YamlLintConfig(file=str(YAMLLINT_CONFIG))
    content = path.read_text() if text is None else text
    return [
        f"{path.name}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})"
        for p in linter.run(content, config, str(path))
    ]


@pytest.mark.parametrize(
    "path",
    [COMPOSE_FILE, CHART_DIR / "Chart.yaml", VALUES_FILE, YAMLLINT_CONFIG],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_yamllint_finds_nothing(path: Path) -> None:
    assert yamllint_problems(path) == []


def test_yamllint_config_still_catches_mistakes() -> None:
    # The configuration must not switch the useful rules off.
    bad = "services:\n  a: 1\n  a: 2\n  b: yes\n"
    problems = " ".join(yamllint_problems(COMPOSE_FILE, bad))
    assert "key-duplicates" in problems
    assert "truthy" in problems


# ------------------------------------------------------------- compose schema


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema as check-jsonschema vendors it."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    assert schema.get("title") == "Compose Specification"
    return schema


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification(compose_schema: dict[str, Any]) -> None:
    assert schema_errors(compose_schema, load_yaml(COMPOSE_FILE)) == []


def test_compose_schema_rejects_what_compose_would_reject(compose_schema: dict[str, Any]) -> None:
    document = load_yaml(COMPOSE_FILE)
    document["services"]["worker"]["replica"] = 3  # a typo of deploy.replicas
    document["services"]["bridge"]["depends_on"]["redis"]["condition"] = "service_up"
    errors = " ".join(schema_errors(compose_schema, document))
    assert "replica" in errors
    assert "service_up" in errors


# ----------------------------------------------------------- compose semantics


def test_compose_worker_scales_with_scale_flag() -> None:
    worker = compose_config()["services"]["worker"]
    # A fixed name or host port would make `--scale worker=N` fail.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "v1-sync-helper worker" in " ".join(worker["command"])


def test_compose_redis_is_configured_as_a_queue() -> None:
    command = compose_config()["services"]["redis"]["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--appendonly"] == "yes"


def test_compose_creates_both_buckets_with_documented_limits() -> None:
    script = " ".join(compose_config()["services"]["nats-init"]["command"])
    for bucket, limits in DOCUMENTED_BUCKETS.items():
        adds = [line for line in script.split("||") if f"nats kv add {bucket} " in line]
        assert len(adds) == 1, f"no `nats kv add {bucket}`"
        args = shlex.split(adds[0].split("nats kv add", 1)[1].strip().splitlines()[0])
        options = dict(zip(args[1::2], args[2::2], strict=False))
        assert int(options["--max-bucket-size"]) == limits["maxBytes"]
        assert int(options["--history"]) == limits["history"]
        assert options["--storage"] == "file"


def test_compose_services_depend_on_services_that_exist() -> None:
    services = compose_config()["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_compose_builds_app_services_from_the_dockerfile_stages() -> None:
    stages = {stage.name for stage in dockerfile_stages()}
    services = compose_config()["services"]
    for name in ("bridge", "worker", "flower", "keygen"):
        assert services[name]["build"]["target"] == "runtime", name
    for name in ("sandbox", "sample-data"):
        assert services[name]["build"]["target"] == "sandbox", name
    targets = {s["build"]["target"] for s in services.values() if "build" in s}
    assert targets <= stages


def test_compose_flower_requires_basic_auth() -> None:
    flower = compose_config()["services"]["flower"]
    user, _, password = service_env(flower)["FLOWER_BASIC_AUTH"].partition(":")
    assert user
    assert password
    assert "--no-auth" not in json.dumps(flower)


def test_compose_worker_health_is_its_own_readiness_endpoint() -> None:
    worker = compose_config()["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "/readyz" in test[3]
    assert "WORKER_METRICS_PORT" in test[3]
    assert "celery" not in test[3]  # no Celery import, no broker round trip
    assert service_env(worker)["WORKER_METRICS_PORT"]


def worker_command_env(worker: dict[str, Any], pems: dict[str, str]) -> dict[str, str]:
    """The worker's environment after its entrypoint loaded the generated keys."""
    env = service_env(worker)
    script = " ".join(worker["command"])
    for variable, key in (("HEIMDALL_PRIVATE_KEY", "heimdall"), ("AUTH0_PRIVATE_KEY", "auth0")):
        assert f"/keys/{key}.pem" in script, f"the worker does not load {variable} from the volume"
        env[variable] = env.get(variable) or pems[key]
    return env


def test_compose_environment_satisfies_the_settings(
    rsa_pems: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_config()["services"]
    worker_env = worker_command_env(services["worker"], rsa_pems)
    cases: list[tuple[str, type[BaseSettings], dict[str, str]]] = [
        ("bridge", BridgeSettings, service_env(services["bridge"])),
        ("worker", WorkerSettings, worker_env),
        ("flower", FlowerSettings, service_env(services["flower"])),
    ]
    for name, settings_cls, env in cases:
        unknown = set(env) - field_env_names(settings_cls) - NON_SETTINGS_ENV
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
        build_settings(settings_cls, env, monkeypatch)
    worker = build_settings(WorkerSettings, worker_env, monkeypatch)
    assert isinstance(worker, WorkerSettings)
    assert worker.project_service_url == "http://sandbox:8000"
    assert worker.auth0_token_url == "http://sandbox:8000/oauth/token"


def test_compose_env_file_overrides_reach_the_services(
    rsa_pems: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {"PROJECT_SERVICE_URL": "https://projects.example.com", "WORKER_CONCURRENCY": "4"}
    worker = compose_config(overrides)["services"]["worker"]
    settings = build_settings(WorkerSettings, worker_command_env(worker, rsa_pems), monkeypatch)
    assert isinstance(settings, WorkerSettings)
    assert settings.project_service_url == "https://projects.example.com"
    assert service_env(worker)["WORKER_CONCURRENCY"] == "4"


def test_compose_v2_to_v1_switch_is_off_by_default_and_reaches_bridge_and_worker(
    rsa_pems: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_config()["services"]
    for name in ("bridge", "worker"):
        assert service_env(services[name])["SYNC_V2_TO_V1"] == "false", name
    on = compose_config({"SYNC_V2_TO_V1": "true"})["services"]
    bridge = build_settings(BridgeSettings, service_env(on["bridge"]), monkeypatch)
    worker = build_settings(WorkerSettings, worker_command_env(on["worker"], rsa_pems), monkeypatch)
    assert isinstance(bridge, BridgeSettings)
    assert isinstance(worker, WorkerSettings)
    assert bridge.sync_v2_to_v1 is True
    assert worker.sync_v2_to_v1 is True
    # Compose's defaults are the settings' own: the stream the bridge makes is the documented one.
    defaults = BridgeSettings.model_fields
    for name in ("v2_events_stream", "v2_events_consumer_name", "v2_events_subjects"):
        assert getattr(bridge, name) == defaults[name].default, name
    assert bridge.v2_events_max_age == defaults["v2_events_max_age"].default


@pytest.mark.parametrize(("switch", "publishes"), [(None, False), ("true", True), ("0", False)])
def test_compose_sandbox_publishes_the_indexer_events_with_the_switch(
    switch: str | None,
    publishes: bool,
    rsa_pems: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overrides = {} if switch is None else {"SYNC_V2_TO_V1": switch}
    sandbox = compose_config(overrides)["services"]["sandbox"]
    for name in ("NATS_URL", *(n for n in os.environ if n.startswith("SANDBOX_"))):
        monkeypatch.delenv(name, raising=False)
    for name, value in service_env(sandbox).items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(sandbox["command"])
    # The key files the keygen one-shot writes into the `keys` volume.
    for option, key in (("heimdall_key", "heimdall"), ("auth0_key", "auth0")):
        path = tmp_path / f"{key}.pem"
        path.write_text(rsa_pems[key])
        setattr(args, option, path)
    built = build_sandbox(args)
    assert built.publish_indexer_events is publishes
    assert built.v1_objects_bucket == "v1-objects"


def test_sandbox_refuses_a_switch_that_is_not_a_boolean(
    tmp_path: Path, rsa_pems: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_INDEXER_EVENTS", "maybe")
    key = tmp_path / "heimdall.pem"
    key.write_text(rsa_pems["heimdall"])
    args = build_parser().parse_args(["--nats-url", "nats://nats:4222", "--heimdall-key", str(key)])
    with pytest.raises(ValueError, match=r"--indexer-events \(SANDBOX_INDEXER_EVENTS\): 'maybe'"):
        build_sandbox(args)


def test_compose_app_containers_are_hardened() -> None:
    services = compose_config()["services"]
    for name in ("bridge", "worker", "flower", "sandbox"):
        assert services[name]["read_only"] is True, name
        assert "/tmp" in services[name]["tmpfs"], name
        assert "user" not in services[name], f"{name} must run as the image's user"


def test_compose_shell_commands_parse() -> None:
    services = compose_config()["services"]
    scripts = [
        " ".join(services[name]["command"])
        for name in ("nats-init", "worker")
        if services[name].get("entrypoint", [""])[0] == "/bin/sh"
    ]
    scripts += [
        check["test"][1]
        for service in services.values()
        if (check := service.get("healthcheck")) and check["test"][0] == "CMD-SHELL"
    ]
    assert len(scripts) >= 2
    for script in scripts:
        result = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{script!r}: {result.stderr}"


def test_compose_python_healthchecks_compile() -> None:
    checks = [
        service["healthcheck"]["test"]
        for service in compose_config()["services"].values()
        if "healthcheck" in service and service["healthcheck"]["test"][1] == "python"
    ]
    assert len(checks) >= 3
    for check in checks:
        assert check[:4] == ["CMD", "python", "-c", check[3]]
        compile(check[3], "healthcheck", "exec")


def test_compose_keygen_writes_private_keys_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keygen = compose_config()["services"]["keygen"]
    assert keygen["entrypoint"] == ["python", "-c"]
    script = keygen["command"][0].replace('"/keys"', repr(str(tmp_path)))
    owners: list[tuple[int, int]] = []
    # Tests need not run as root: record the chown instead of doing it.
    monkeypatch.setattr("os.chown", lambda path, uid, gid: owners.append((uid, gid)))
    exec(compile(script, "keygen", "exec"), {})
    pems = {name: (tmp_path / f"{name}.pem") for name in ("heimdall", "auth0")}
    for path in pems.values():
        assert path.stat().st_mode & 0o777 == 0o400
        load_rsa_private_key(SecretStr(path.read_text()))
    assert owners == [(10001, 10001)] * 2
    before = {name: path.read_bytes() for name, path in pems.items()}
    exec(compile(script, "keygen", "exec"), {})
    assert {name: path.read_bytes() for name, path in pems.items()} == before


# ------------------------------------------------------------------ .env.example


def env_example_entries() -> dict[str, tuple[str, str | None]]:
    """NAME -> (value, the comment line above it)."""
    entries: dict[str, tuple[str, str | None]] = {}
    previous: str | None = None
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", stripped)
        if match:
            entries[match.group(1)] = (match.group(2), previous)
        previous = stripped if stripped.startswith("#") else (None if stripped else previous)
    return entries


def test_env_example_lists_every_variable() -> None:
    listed = set(env_example_entries())
    needed = ALL_SETTINGS_ENV | NON_SETTINGS_ENV | compose_variables()
    assert sorted(needed - listed) == []


def test_env_example_documents_every_variable() -> None:
    undocumented = [name for name, (_, comment) in env_example_entries().items() if not comment]
    assert undocumented == []


def test_env_example_copied_to_env_changes_nothing() -> None:
    values = {name: value for name, (value, _) in env_example_entries().items()}
    assert compose_config(values) == compose_config()


# --------------------------------------------------------------- chart, static


TEMPLATE_ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)
VALUES_PATH = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
BLOCK_OPENERS = ("if", "range", "with", "define", "block")


def template_actions(text: str) -> Iterator[str]:
    """The body of every ``{{ … }}`` action, comments excluded."""
    for match in TEMPLATE_ACTION.finditer(text):
        body = match.group(1).strip()
        if not body.startswith("/*"):
            yield body


def balance_problems(text: str) -> list[str]:
    """Unbalanced delimiters or block actions in one template."""
    problems = []
    if text.count("{{") != text.count("}}"):
        problems.append(f"{text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    stack: list[str] = []
    for action in template_actions(text):
        word = action.split(maxsplit=1)[0] if action else ""
        if word in BLOCK_OPENERS:
            stack.append(action)
        elif word == "else":
            if not stack or stack[-1].split()[0] not in ("if", "with", "range"):
                problems.append(f"'{action}' outside if/with/range")
        elif word == "end":
            if not stack:
                problems.append("'end' without an open block")
            else:
                stack.pop()
    problems.extend(f"'{action}' is never closed" for action in stack)
    return problems


def missing_values_paths(text: str, values: dict[str, Any]) -> list[str]:
    """``.Values.…`` paths used in ``text`` that values.yaml does not define."""
    missing = []
    for action in template_actions(text):
        for match in VALUES_PATH.finditer(action):
            node: Any = values
            for key in match.group(1).strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f".Values{match.group(1)}")
                    break
                node = node[key]
    return missing


# Every template file, those of templates/tests/ (the `helm test` pods) too.
TEMPLATES = sorted(path for path in TEMPLATES_DIR.rglob("*") if path.is_file())


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(TEMPLATES_DIR)))
def test_template_uses_only_values_that_exist(template: Path) -> None:
    assert missing_values_paths(template.read_text(), load_yaml(VALUES_FILE)) == []


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(TEMPLATES_DIR)))
def test_template_is_balanced(template: Path) -> None:
    assert balance_problems(template.read_text()) == []


def test_static_template_checks_catch_mistakes() -> None:
    assert balance_problems("{{- if .Values.a }}x") == ["'if .Values.a' is never closed"]
    assert balance_problems("x {{ end }}") == ["'end' without an open block"]
    assert balance_problems("{{ .Values.a }") != []
    values = {"a": {"b": 1}}
    text = "{{ .Values.a.b }} {{ .Values.a.c | quote }} {{ $.Values.d }}"
    assert missing_values_paths(text, values) == [".Values.a.c", ".Values.d"]


def undocumented_keys(text: str) -> list[str]:
    """Mapping keys of a values file whose previous non-blank line is not a comment."""
    undocumented = []
    previous = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        key = re.match(r"\s*([A-Za-z0-9_.\-/\"']+):(\s|$)", line)
        if key and not previous.startswith("#"):
            undocumented.append(f"line {number}: {key.group(1)}")
        previous = stripped
    return undocumented


def test_values_yaml_documents_every_value() -> None:
    assert undocumented_keys(VALUES_FILE.read_text()) == []
    assert undocumented_keys("# -- ok\na: 1\nb:\n  # -- ok\n  c: 2\n") == ["line 3: b"]


# ----------------------------------------------------------------- chart, Helm


def test_helm_lint_is_clean() -> None:
    report = helm_python.lint(str(CHART_DIR), REQUIRED_VALUES, strict=True)
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == []
    assert findings == []


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ({"heimdall": {"existingSecret": ""}}, "heimdall.existingSecret is required"),
        ({"auth0": {"existingSecret": ""}}, "auth0.existingSecret is required"),
        ({"flower": {"enabled": True}}, "flower.basicAuth.existingSecret is required"),
    ],
)
def test_chart_refuses_to_render_without_its_secrets(missing: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render_chart(deep_merge(REQUIRED_VALUES, missing))


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(name, rendered objects) for each set of values."""
    name: str = request.param
    return name, rendered_objects(VALUE_SETS[name])


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    return rendered_objects(REQUIRED_VALUES)


@pytest.fixture(scope="module")
def all_objects() -> list[dict[str, Any]]:
    return rendered_objects(ALL_FEATURES_VALUES)


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_rendered_objects_match_the_kubernetes_schemas(
    values_name: str, kubernetes_version: str
) -> None:
    # Rendered as for that cluster version: some fields are only set where it knows them.
    objects = rendered_objects(VALUE_SETS[values_name], kubernetes_version)
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("jetstream.nats.io/"):
            continue
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        checked += 1
    assert checked >= 3  # two Deployments and a Service at least


def test_rendered_nack_resources_use_known_fields(
    value_set: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = value_set
    for obj in objects:
        if not obj["apiVersion"].startswith("jetstream.nats.io/"):
            continue
        assert obj["apiVersion"] == "jetstream.nats.io/v1beta2"
        fields = NACK_SPEC_FIELDS[obj["kind"]]
        for key, value in obj["spec"].items():
            assert key in fields, f"{obj['kind']}.spec.{key} is not a NACK field"
            assert type(value) is fields[key], f"{obj['kind']}.spec.{key}={value!r}"
            if key in NACK_ENUMS:
                assert value in NACK_ENUMS[key], f"{obj['kind']}.spec.{key}={value!r}"


def test_render_for_kubernetes_still_sets_the_capabilities() -> None:
    # Guards render_for_kubernetes (private helm-python-sdk parts): the PDB's
    # unhealthyPodEvictionPolicy is rendered only for Kubernetes 1.27 and later.
    assert callable(helm_python._native.call_string), "helm_python._native.call_string is gone"
    assert callable(helm_python.Chart._raw), "helm_python.Chart._raw is gone"

    def policies(kube_version: str) -> list[str | None]:
        budgets = objects_by_kind(
            rendered_objects(REQUIRED_VALUES, kube_version), "PodDisruptionBudget"
        )
        return [b["spec"].get("unhealthyPodEvictionPolicy") for b in budgets.values()]

    assert policies("1.25.0") == [None, None], "kube_version did not reach .Capabilities"
    assert policies("1.27.0") == ["AlwaysAllow", "AlwaysAllow"]


def test_selectors_match_their_pods(value_set: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = value_set
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in objects_by_kind(objects, "Deployment").items()
    }
    for obj in objects:
        if obj["kind"] in ("Deployment", "PodDisruptionBudget"):
            selector = obj["spec"]["selector"]["matchLabels"]
        elif obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        else:
            continue
        matching = [n for n, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matching) == 1, f"{obj['kind']} {obj['metadata']['name']} selects {matching}"


def test_consumer_resource_carries_the_documented_settings(
    default_objects: list[dict[str, Any]],
) -> None:
    consumers = objects_by_kind(default_objects, "Consumer")
    assert list(consumers) == ["v1-sync-helper-kv-consumer"]
    spec = consumers["v1-sync-helper-kv-consumer"]["spec"]
    assert {key: spec[key] for key in DOCUMENTED_CONSUMER} == DOCUMENTED_CONSUMER
    assert "deliverSubject" not in spec  # a pull consumer


def test_bucket_resources_carry_the_documented_limits(
    default_objects: list[dict[str, Any]],
) -> None:
    buckets = {o["spec"]["bucket"]: o["spec"] for o in default_objects if o["kind"] == "KeyValue"}
    assert set(buckets) == set(DOCUMENTED_BUCKETS)
    for bucket, limits in DOCUMENTED_BUCKETS.items():
        assert {key: buckets[bucket][key] for key in limits} == limits
        assert buckets[bucket]["storage"] == "file"


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize(
    ("values_key", "kind", "name"),
    [
        ("objectsBucket", "KeyValue", "v1-objects"),
        ("mappingsBucket", "KeyValue", "v1-mappings"),
        ("stateBucket", "KeyValue", "v1-sync-state"),
        ("kvConsumer", "Consumer", "v1-sync-helper-kv-consumer"),
    ],
)
def test_keep_flag_adds_resource_policy_keep(
    values_key: str, kind: str, name: str, keep: bool
) -> None:
    values = deep_merge(REQUIRED_VALUES, {"nats": {values_key: {"keep": keep}}})
    resource = objects_by_kind(rendered_objects(values), kind)[name]
    annotations = resource["metadata"].get("annotations") or {}
    assert (annotations.get("helm.sh/resource-policy") == "keep") is keep
    assert resource["spec"]["preventDelete"] is keep


@pytest.mark.parametrize(
    "values_key", ["objectsBucket", "mappingsBucket", "stateBucket", "kvConsumer"]
)
def test_creation_flag_controls_the_nack_resource(values_key: str) -> None:
    kinds_before = [o["kind"] for o in rendered_objects(REQUIRED_VALUES)]
    values = deep_merge(REQUIRED_VALUES, {"nats": {values_key: {"creation": False}}})
    kinds_after = [o["kind"] for o in rendered_objects(values)]
    kind = "Consumer" if values_key == "kvConsumer" else "KeyValue"
    assert kinds_after.count(kind) == kinds_before.count(kind) - 1


def test_bridge_and_worker_scale_separately() -> None:
    values = deep_merge(REQUIRED_VALUES, {"bridge": {"replicas": 3}, "worker": {"replicas": 7}})
    objects = rendered_objects(values)
    assert deployment(objects, "bridge")["spec"]["replicas"] == 3
    assert deployment(objects, "worker")["spec"]["replicas"] == 7


def test_worker_autoscaler_owns_the_replica_count(all_objects: list[dict[str, Any]]) -> None:
    worker = deployment(all_objects, "worker")
    assert "replicas" not in worker["spec"]
    (hpa,) = objects_by_kind(all_objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 1


def test_disruption_budgets_cover_bridge_and_worker(
    default_objects: list[dict[str, Any]],
) -> None:
    budgets = objects_by_kind(default_objects, "PodDisruptionBudget").values()
    components = {
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for b in budgets
    }
    assert components == {"bridge", "worker"}


def test_pods_run_unprivileged_on_a_read_only_root(all_objects: list[dict[str, Any]]) -> None:
    deployments = objects_by_kind(all_objects, "Deployment").values()
    assert len(deployments) == 3
    for deploy in deployments:
        pod = deploy["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"]
        for c in pod["containers"]:
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert c["resources"]["requests"]
            assert c["resources"]["limits"]["memory"]


def test_probes(default_objects: list[dict[str, Any]]) -> None:
    bridge = container(deployment(default_objects, "bridge"))
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert bridge["ports"][0]["containerPort"] == 8080
    worker = container(deployment(default_objects, "worker"))
    # The worker's own endpoints (tasks.worker.probes), on its metrics port: no exec.
    assert "exec" not in worker["livenessProbe"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert int(env["WORKER_METRICS_PORT"]) == ports["metrics"]
    # Liveness tolerates a stale loop for the configured threshold, no less.
    assert float(env["WORKER_LIVENESS_STALE_SECONDS"]) > 0
    assert float(env["WORKER_SLOT_STALL_SECONDS"]) > 120  # above the task hard time limit


def resolve_env(env: list[dict[str, Any]], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """A container's environment, Secret references looked up in ``secrets``."""
    resolved = {}
    for item in env:
        if "value" in item:
            resolved[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            resolved[item["name"]] = secrets[(ref["name"], ref["key"])]
    return resolved


@pytest.fixture
def cluster_secrets(rsa_pems: dict[str, str]) -> dict[tuple[str, str], str]:
    """What the operator's Secrets hold, keyed by (Secret, key) as values.yaml names them."""
    return {
        (HEIMDALL_SECRET, "private-key"): rsa_pems["heimdall"],
        (AUTH0_SECRET, "tenant"): "linuxfoundation-dev",
        (AUTH0_SECRET, "client-id"): "client-123",
        (AUTH0_SECRET, "private-key"): rsa_pems["auth0"],
        (FLOWER_SECRET, "basic-auth"): "ops:s3cret",
        ("redis-url", "redis-url"): "redis://:pw@redis.lfx.svc:6379/0",
    }


@pytest.mark.parametrize("values_name", ["defaults", "all"])
def test_rendered_environment_satisfies_the_settings(
    values_name: str,
    cluster_secrets: dict[tuple[str, str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = rendered_objects(VALUE_SETS[values_name])
    cases: list[tuple[str, type[BaseSettings]]] = [
        ("bridge", BridgeSettings),
        ("worker", WorkerSettings),
    ]
    if values_name == "all":
        cases.append(("flower", FlowerSettings))
    extra = {e["name"] for e in ALL_FEATURES_VALUES["extraEnv"]}
    for component, settings_cls in cases:
        env = resolve_env(container(deployment(objects, component))["env"], cluster_secrets)
        unknown = set(env) - field_env_names(settings_cls) - NON_SETTINGS_ENV - extra
        assert not unknown, f"{component} sets variables no setting reads: {sorted(unknown)}"
        settings = build_settings(settings_cls, env, monkeypatch)
        assert settings.model_dump()["kv_consumer_name"] == "v1-sync-helper-kv-consumer"


def test_worker_arguments_are_ones_the_cli_accepts(default_objects: list[dict[str, Any]]) -> None:
    from tasks.worker.command import DEFAULT_CONCURRENCY
    from v1_sync_helper.cli import main

    args = container(deployment(default_objects, "worker"))["args"]
    assert args[0] == "worker"
    context = main.commands["worker"].make_context("worker", list(args[1:]))
    assert context.params["concurrency"] == DEFAULT_CONCURRENCY  # the measured default
    assert context.params["pool"] == "threads"
    for component in ("bridge", "flower"):
        deploy = deployment(rendered_objects(ALL_FEATURES_VALUES), component)
        first = container(deploy)["args"][0]
        assert first in main.commands


def test_probe_app_imports_without_worker_secrets() -> None:
    # The liveness probe runs `celery -A tasks.worker.app:app` in the container: the
    # app must load with only the broker settings (no keys in the probe's env).
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"}
    code = "from celery import Celery; from tasks.celery import app; assert isinstance(app, Celery)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------ Dockerfile


class Stage:
    """One stage of a Dockerfile: its name, base and instructions."""

    def __init__(self, base: str, name: str | None) -> None:
        self.base = base
        self.name = name
        self.instructions: list[tuple[str, str]] = []

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        instruction, _, arguments = logical.strip().partition(" ")
        yield instruction.upper(), arguments.strip()
        logical = ""


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    """The stages of the Dockerfile, in order."""
    stages: list[Stage] = []
    for instruction, arguments in dockerfile_instructions(text or DOCKERFILE.read_text()):
        if instruction == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arguments, re.I)
            assert match, arguments
            stages.append(Stage(match.group(1), match.group(2)))
        elif stages:
            stages[-1].instructions.append((instruction, arguments))
    return stages


def stage_chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """``stage`` and the stages it is built FROM, base first."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def image_contributors(stages: list[Stage], final: Stage) -> list[Stage]:
    """Every stage whose work ends up in ``final``: its chain and what it COPY --from's."""
    by_name = {s.name: s for s in stages if s.name}
    seen: list[Stage] = []
    pending = [final]
    while pending:
        stage = pending.pop()
        for member in stage_chain(stages, stage):
            if member in seen:
                continue
            seen.append(member)
            for copy in member.all("COPY"):
                source = re.search(r"--from=(\S+)", copy)
                if source and source.group(1) in by_name:
                    pending.append(by_name[source.group(1)])
    return seen


def effective(stages: list[Stage], stage: Stage, instruction: str) -> str | None:
    """The last ``instruction`` in force for ``stage`` (inherited through FROM)."""
    found = None
    for member in stage_chain(stages, stage):
        values = member.all(instruction)
        if values:
            found = values[-1]
    return found


def runtime_problems(text: str) -> list[str]:
    """What is wrong with the final stage of a Dockerfile, for production."""
    stages = dockerfile_stages(text)
    final = stages[-1]
    problems = []
    user = effective(stages, final, "USER")
    if user is None:
        problems.append("no USER: the image runs as root")
    elif user.split(":")[0] in ("root", "0"):
        problems.append(f"USER {user} is root")
    entrypoint = effective(stages, final, "ENTRYPOINT")
    if entrypoint is None or json.loads(entrypoint)[:1] != ["v1-sync-helper"]:
        problems.append(f"ENTRYPOINT is {entrypoint}, not v1-sync-helper")
    runtime_chain = stage_chain(stages, final)
    for stage in image_contributors(stages, final):
        for run in stage.all("RUN"):
            if "[dev]" in run:
                problems.append(f"stage {stage.name} installs the dev extra")
            if stage in runtime_chain and COMPILER_PACKAGES.search(run):
                problems.append(f"stage {stage.name} installs build tools: {run}")
    return problems


def test_dockerfile_runtime_stage_is_last_non_root_and_lean() -> None:
    stages = dockerfile_stages()
    assert stages[-1].name == "runtime"
    assert runtime_problems(DOCKERFILE.read_text()) == []


def test_dockerfile_checks_catch_a_root_image() -> None:
    text = DOCKERFILE.read_text()
    as_root = text.rstrip() + "\nUSER root\n"
    assert any("root" in p for p in runtime_problems(as_root))
    no_user = re.sub(r"^USER .*$", "", text, flags=re.M)
    assert "no USER: the image runs as root" in runtime_problems(no_user)
    with_dev = text.replace("COPY --from=build /opt/venv", "COPY --from=build-dev /opt/venv")
    assert any("dev extra" in p for p in runtime_problems(with_dev))
    with_gcc = text.rstrip() + "\nRUN apt-get install -y gcc\n"
    assert any("build tools" in p for p in runtime_problems(with_gcc))
    other_entry = text.replace('ENTRYPOINT ["v1-sync-helper"]', 'ENTRYPOINT ["celery"]')
    assert any("ENTRYPOINT" in p for p in runtime_problems(other_entry))


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def copied_sources() -> list[str]:
    """The build-context paths the Dockerfile COPYs (not those from other stages)."""
    sources = []
    for stage in dockerfile_stages():
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            parts = [p for p in copy.split() if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def test_dockerfile_copies_every_package_of_the_distribution() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    copied = {source.rstrip("/") for source in copied_sources()}
    assert packages <= copied
    assert "pyproject.toml" in copied


def test_build_context_exists() -> None:
    # pyproject.toml names README.md as the readme: the wheel build needs it.
    missing = [source for source in copied_sources() if not (ROOT / source).exists()]
    assert missing == []


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Whether the build context keeps ``path`` (Docker's last-match-wins rule)."""
    allowed = True
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        regex = re.escape(body.rstrip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\[cod\]", "[cod]")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            allowed = negate
    return allowed


def test_dockerignore_keeps_sources_and_drops_secrets() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copied_sources():
        assert dockerignore_allows(source.rstrip("/") + "/x.py", patterns) or dockerignore_allows(
            source, patterns
        ), source
    for secret in (".env", "keys/heimdall.pem", "sandbox/dev.pem", ".run/keys/a.pem", ".git/HEAD"):
        assert not dockerignore_allows(secret, patterns), secret
    assert not dockerignore_allows("tasks/__pycache__/x.pyc", patterns)
