"""The chart's hygiene: values.schema.json, the scheduling knobs, NetworkPolicies, `helm test`.

Rendered by Helm itself (helm-python-sdk, as in tests/test_deployment.py):

- values.schema.json is a valid draft-07 schema; Helm accepts the defaults and
  the full example (ci/full-values.yaml) and refuses, naming the key, a typo'd
  key at the top levels, a wrong type and a value outside an enum; its
  properties and values.yaml's keys are the same set at every level it closes;
- the full example rendered for the oldest and the newest Kubernetes the
  chart supports, every object validated against that version's OpenAPI
  schemas (kubernetes-validate, strict: unknown fields fail);
- priorityClassName, topologySpreadConstraints (a constraint without a selector
  gets the component's), the Deployment strategies, the PDBs'
  unhealthyPodEvictionPolicy;
- the NetworkPolicies: off by default; when on, each selects exactly its
  component's pods, admits traffic only on the ports those pods serve, and
  lets each process reach only DNS and the services it uses;
- the `helm test` pod: a test hook running `v1-sync-helper status`, whose
  arguments the CLI accepts and whose environment the settings accept.

The KEDA objects are checked in tests/test_chart_keda.py. Applying the objects
to a cluster and running `helm test` against a live release need a cluster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest

from sync_core.settings import BridgeSettings
from tests.test_deployment import (
    ALL_FEATURES_VALUES,
    CHART_DIR,
    KUBERNETES_VERSIONS,
    REQUIRED_VALUES,
    VALUES_FILE,
    build_settings,
    container,
    deep_merge,
    deployment,
    field_env_names,
    load_yaml,
    objects_by_kind,
    render_chart,
    rendered_objects,
    resolve_env,
    yamllint_problems,
)

SCHEMA_FILE = CHART_DIR / "values.schema.json"
FULL_VALUES_FILE = CHART_DIR / "ci" / "full-values.yaml"
COMPONENTS = ("bridge", "worker", "flower")
KEDA_API_GROUP = "keda.sh/"
# Kubernetes structs passed through as they are: values.yaml sets only some of their fields.
PASSED_THROUGH_STRUCTS = ("podSecurityContext", "securityContext", "strategy")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def full_values() -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(FULL_VALUES_FILE)
    return values


def helm_schema_error(values: dict[str, Any]) -> str:
    """Helm's own schema verdict on ``values`` (over the chart's defaults): '' when accepted."""
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        try:
            chart.validate_schema(chart.merge_values(values))
        except helm_python.HelmError as error:
            return str(error)
    return ""


# ------------------------------------------------------------------ the schema


def test_schema_is_a_valid_draft_7_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)


def test_helm_accepts_the_defaults_and_the_full_example(full_values: dict[str, Any]) -> None:
    assert helm_schema_error(REQUIRED_VALUES) == ""
    assert helm_schema_error(ALL_FEATURES_VALUES) == ""
    assert helm_schema_error(full_values) == ""
    # The second opinion of another validator, on the raw files.
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text()))
    assert [e.message for e in validator.iter_errors(load_yaml(VALUES_FILE))] == []


def test_helm_lint_is_clean_with_the_full_example(full_values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART_DIR), full_values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_full_example_passes_yamllint() -> None:
    assert yamllint_problems(FULL_VALUES_FILE) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": {"replicas": 3}}, "additional properties 'workers' not allowed"),
        ({"bridge": {"replica": 3}}, "additional properties 'replica' not allowed"),
        ({"networkPolicy": {"enable": True}}, "additional properties 'enable' not allowed"),
        ({"worker": {"keda": {"minReplicas": 1}}}, "additional properties 'minReplicas'"),
        ({"worker": {"concurrency": "32"}}, "/worker/concurrency': got string, want integer"),
        ({"config": {"debug": "yes"}}, "/config/debug': got string, want boolean"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy'"),
        (
            {"worker": {"pdb": {"unhealthyPodEvictionPolicy": "Never"}}},
            "unhealthyPodEvictionPolicy",
        ),
        ({"bridge": {"port": 70000}}, "/bridge/port'"),
        (
            {"worker": {"keda": {"redis": {"address": "redis://r:6379"}}}},
            "/worker/keda/redis/address",
        ),
        (
            {"flower": {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}},
            "/flower/strategy",
        ),
    ],
)
def test_helm_refuses_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    error = helm_schema_error(deep_merge(REQUIRED_VALUES, values))
    assert message in error
    # And an install (a render) is refused with it.
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render_chart(deep_merge(REQUIRED_VALUES, values))


def test_helm_lint_reports_a_typo(full_values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART_DIR), deep_merge(full_values, {"monitorin": {}}))
    found = " ".join(str(m["error"]) for m in report["messages"]) + " ".join(report["errors"])
    assert "additional properties 'monitorin' not allowed" in found


def closed_key_mismatches(schema: dict[str, Any], values: Any, where: str = "") -> list[str]:
    """Keys that values.yaml and the schema do not share, wherever the schema closes an object."""
    definitions = schema.get("definitions", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[1]]
        return node

    def walk(node: dict[str, Any], value: Any, path: str) -> list[str]:
        node = resolve(node)
        if not isinstance(value, dict) or node.get("additionalProperties") is not False:
            return []
        declared = set(node.get("properties", {}))
        found = [
            f"{path}.{key}: in values.yaml, not in the schema" for key in value.keys() - declared
        ]
        if path.rsplit(".", 1)[-1] not in PASSED_THROUGH_STRUCTS:
            found += [
                f"{path}.{key}: in the schema, not in values.yaml"
                for key in declared - value.keys()
            ]
        for key in value.keys() & declared:
            found += walk(node["properties"][key], value[key], f"{path}.{key}")
        return found

    return walk(schema, values, where)


def test_schema_and_values_yaml_declare_the_same_keys(schema: dict[str, Any]) -> None:
    assert closed_key_mismatches(schema, load_yaml(VALUES_FILE)) == []
    # The check itself notices both directions.
    values = load_yaml(VALUES_FILE)
    values["bridge"]["newKnob"] = 1
    del values["worker"]["pool"]
    assert sorted(closed_key_mismatches(schema, values)) == [
        ".bridge.newKnob: in values.yaml, not in the schema",
        ".worker.pool: in the schema, not in values.yaml",
    ]


def kubernetes_fields(definition: str) -> set[str]:
    """Field names of one Kubernetes struct, from kubernetes-validate's newest OpenAPI schemas."""
    version = kubernetes_validate.latest_version()
    path = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(path.read_text())["$defs"]
    return set(definitions[f"io.k8s.api.core.v1.{definition}"]["properties"])


def test_schema_security_contexts_name_only_kubernetes_fields(schema: dict[str, Any]) -> None:
    for key, definition in (
        ("podSecurityContext", "PodSecurityContext"),
        ("securityContext", "SecurityContext"),
    ):
        declared = set(schema["properties"][key]["properties"])
        assert "runAsNonRoot" in declared
        assert declared <= kubernetes_fields(definition), key


# ------------------------------------------------------ rendered and validated


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_full_example_matches_the_kubernetes_schemas(
    full_values: dict[str, Any], kubernetes_version: str
) -> None:
    objects = rendered_objects(full_values, kubernetes_version)
    kinds = {o["kind"] for o in objects}
    assert {"NetworkPolicy", "Pod", "ScaledObject", "TriggerAuthentication"} <= kinds
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith(
            ("jetstream.nats.io/", "monitoring.coreos.com/", KEDA_API_GROUP)
        ):
            continue  # CRDs: NACK and monitoring in their own tests, KEDA in test_chart_keda.py
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        checked += 1
    assert checked >= 12


@pytest.fixture(scope="module")
def full_objects(full_values: dict[str, Any]) -> list[dict[str, Any]]:
    return rendered_objects(full_values, kubernetes_validate.latest_version())


def pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Labels of every pod the chart runs: Deployment templates and the test Pod."""
    labels = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in objects_by_kind(objects, "Deployment").items()
    }
    labels.update(
        {name: p["metadata"]["labels"] for name, p in objects_by_kind(objects, "Pod").items()}
    )
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_priority_class_names_reach_the_pods(
    full_values: dict[str, Any], full_objects: list[dict[str, Any]]
) -> None:
    for component in COMPONENTS:
        pod = deployment(full_objects, component)["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == full_values[component]["priorityClassName"]
    defaults = rendered_objects(REQUIRED_VALUES)
    for component in ("bridge", "worker"):
        assert (
            "priorityClassName" not in deployment(defaults, component)["spec"]["template"]["spec"]
        )


def test_spread_constraints_get_the_components_selector(
    full_values: dict[str, Any], full_objects: list[dict[str, Any]]
) -> None:
    labels = pod_labels(full_objects)
    for component in ("bridge", "worker"):
        deploy = deployment(full_objects, component)
        (constraint,) = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
        (wanted,) = full_values[component]["topologySpreadConstraints"]
        assert {k: constraint[k] for k in wanted} == wanted
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector == deploy["spec"]["selector"]["matchLabels"]
        assert [n for n, pod in labels.items() if selects(selector, pod)] == [
            deploy["metadata"]["name"]
        ]
    # A constraint that brings its own selector keeps it.
    own = {
        "maxSkew": 1,
        "topologyKey": "zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
    }
    values = deep_merge(REQUIRED_VALUES, {"bridge": {"topologySpreadConstraints": [own]}})
    bridge = deployment(rendered_objects(values), "bridge")
    assert bridge["spec"]["template"]["spec"]["topologySpreadConstraints"] == [own]


def test_strategies(full_values: dict[str, Any], full_objects: list[dict[str, Any]]) -> None:
    for component in ("bridge", "worker"):
        assert (
            deployment(full_objects, component)["spec"]["strategy"]
            == full_values[component]["strategy"]
        )
    defaults = rendered_objects(deep_merge(REQUIRED_VALUES, ALL_FEATURES_VALUES))
    # Kubernetes' rolling update by default; Flower recreates (one replica, a ReadWriteOnce claim).
    assert "strategy" not in deployment(defaults, "bridge")["spec"]
    assert "strategy" not in deployment(defaults, "worker")["spec"]
    assert deployment(defaults, "flower")["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("kubernetes_version", "expected"),
    [("1.25.0", None), ("1.26.0", None), ("1.27.0", "AlwaysAllow")],
)
def test_unhealthy_pod_eviction_policy_where_the_cluster_knows_it(
    kubernetes_version: str, expected: str | None
) -> None:
    objects = rendered_objects(REQUIRED_VALUES, kubernetes_version)
    defaults = objects_by_kind(objects, "PodDisruptionBudget").values()
    assert [b["spec"].get("unhealthyPodEvictionPolicy") for b in defaults] == [expected, expected]
    values = deep_merge(
        REQUIRED_VALUES,
        {
            "bridge": {"pdb": {"unhealthyPodEvictionPolicy": "IfHealthyBudget"}},
            "worker": {"pdb": {"unhealthyPodEvictionPolicy": ""}},
        },
    )
    budgets = objects_by_kind(rendered_objects(values, "1.31.0"), "PodDisruptionBudget")
    policies = {
        n.rsplit("-", 1)[1]: b["spec"].get("unhealthyPodEvictionPolicy") for n, b in budgets.items()
    }
    assert policies == {"bridge": "IfHealthyBudget", "worker": None}


# -------------------------------------------------------------- NetworkPolicy


def test_no_network_policy_by_default() -> None:
    assert objects_by_kind(rendered_objects(ALL_FEATURES_VALUES), "NetworkPolicy") == {}


def policy_of(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (policy,) = [
        p
        for p in objects_by_kind(objects, "NetworkPolicy").values()
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return policy


def egress_ports(policy: dict[str, Any]) -> set[int]:
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_each_policy_selects_exactly_its_components_pods(
    full_objects: list[dict[str, Any]],
) -> None:
    labels = pod_labels(full_objects)
    for component in COMPONENTS:
        policy = policy_of(full_objects, component)
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        selected = [n for n, pod in labels.items() if selects(selector, pod)]
        assert selected == [deployment(full_objects, component)["metadata"]["name"]]
    # The `helm test` pod is left alone (a NetworkPolicy restricts only the pods it selects).
    (test_pod,) = objects_by_kind(full_objects, "Pod").values()
    for policy in objects_by_kind(full_objects, "NetworkPolicy").values():
        assert not selects(
            policy["spec"]["podSelector"]["matchLabels"], test_pod["metadata"]["labels"]
        )


def test_policies_admit_only_the_ports_the_pods_serve(
    full_values: dict[str, Any], full_objects: list[dict[str, Any]]
) -> None:
    metrics_from = full_values["networkPolicy"]["ingress"]["metrics"]["from"]
    flower_from = full_values["networkPolicy"]["ingress"]["flower"]["from"]
    expected_sources = {
        "bridge": [metrics_from],
        "worker": [metrics_from],
        "flower": [flower_from, metrics_from],
    }
    for component in COMPONENTS:
        served = {
            p["containerPort"] for p in container(deployment(full_objects, component))["ports"]
        }
        rules = policy_of(full_objects, component)["spec"]["ingress"]
        assert [rule["from"] for rule in rules] == expected_sources[component]
        for rule in rules:
            assert {(p["port"], p["protocol"]) for p in rule["ports"]} <= {
                (p, "TCP") for p in served
            }


def test_policies_let_each_process_reach_only_what_it_uses(
    full_values: dict[str, Any], full_objects: list[dict[str, Any]]
) -> None:
    egress = full_values["networkPolicy"]["egress"]
    dns_rule = {
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        "to": load_yaml(VALUES_FILE)["networkPolicy"]["egress"]["dns"]["to"],
    }
    services = {"bridge": ["nats", "redis"], "worker": ["nats", "redis", "v2"], "flower": ["redis"]}
    for component, names in services.items():
        rules = policy_of(full_objects, component)["spec"]["egress"]
        expected = [dns_rule] + [
            {"ports": egress[n]["ports"], "to": egress[n]["to"]} for n in names
        ]
        assert rules == expected + egress["extra"], component
    assert 443 not in egress_ports(policy_of(full_objects, "bridge"))
    assert 4222 not in egress_ports(policy_of(full_objects, "flower"))


def test_empty_peer_lists_mean_any_peer_on_those_ports_only() -> None:
    values = deep_merge(REQUIRED_VALUES, {"networkPolicy": {"enabled": True}})
    objects = rendered_objects(values)
    worker = policy_of(objects, "worker")["spec"]
    (ingress,) = worker["ingress"]
    assert "from" not in ingress
    assert ingress["ports"] == [{"port": 9100, "protocol": "TCP"}]
    assert all(rule["ports"] for rule in worker["egress"])  # never an allow-all rule
    assert [sorted(p["port"] for p in r["ports"]) for r in worker["egress"] if "to" not in r] == [
        [4222],
        [6379, 26379],
        [443, 4457, 8080],
    ]
    # No Flower, no Flower policy; DNS can be left to the cluster's own rules.
    values = deep_merge(values, {"networkPolicy": {"egress": {"dns": {"enabled": False}}}})
    objects = rendered_objects(values)
    assert sorted(objects_by_kind(objects, "NetworkPolicy")) == [
        "sync-lfx-v1-sync-helper-bridge",
        "sync-lfx-v1-sync-helper-worker",
    ]
    assert 53 not in egress_ports(policy_of(objects, "bridge"))


# ------------------------------------------------------------------ helm test


def status_test_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (pod,) = objects_by_kind(objects, "Pod").values()
    return pod


def test_helm_test_pod_runs_status_as_a_test_hook(full_objects: list[dict[str, Any]]) -> None:
    from v1_sync_helper.cli import main

    pod = status_test_pod(full_objects)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] > 0
    (status,) = spec["containers"]
    assert status["args"][0] == "status"
    context = main.commands["status"].make_context("status", list(status["args"][1:]))
    assert context.params["ping_timeout"] == 10.0
    # Hardened like the workloads: read-only root, unprivileged, the image's user.
    assert status["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in status["volumeMounts"]
    assert status["image"] == container(deployment(full_objects, "bridge"))["image"]


def test_helm_test_pod_environment_satisfies_the_status_settings(
    full_objects: list[dict[str, Any]],
    rsa_pems: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {("redis-url", "redis-url"): "redis://:pw@redis-master.lfx.svc:6379/0"}
    (status,) = status_test_pod(full_objects)["spec"]["containers"]
    env = resolve_env(status["env"], secrets)
    bridge_env = resolve_env(container(deployment(full_objects, "bridge"))["env"], secrets)
    # The status command reads the bridge's settings: the same NATS, broker, names.
    assert {k: bridge_env[k] for k in env} == env
    unknown = set(env) - field_env_names(BridgeSettings) - {"EXTRA"}
    assert not unknown
    settings = build_settings(BridgeSettings, env, monkeypatch)
    assert isinstance(settings, BridgeSettings)
    assert settings.redis_url.startswith("redis://")


def test_helm_test_pod_can_be_left_out() -> None:
    values = deep_merge(REQUIRED_VALUES, {"tests": {"enabled": False}})
    assert objects_by_kind(rendered_objects(values), "Pod") == {}
    assert len(objects_by_kind(rendered_objects(REQUIRED_VALUES), "Pod")) == 1
