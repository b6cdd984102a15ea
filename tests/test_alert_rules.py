"""Every alert of the chart, evaluated by Prometheus itself: ``promtool test rules``.

The PrometheusRule is rendered by Helm (helm-python-sdk, as in
tests/test_deployment.py), its groups written to a rule file, then:

- ``promtool check rules`` loads them as Prometheus would (PromQL, templates);
- ``promtool test rules`` replays recorded series (``input_series``) through
  Prometheus's own rule evaluator and compares the alerts that fire, with
  their labels and summary, at given times (``alert_rule_test``): each alert
  fires when it should and stays quiet when it should not.

promtool comes with Debian's ``prometheus`` package (``apt-get install -y
--no-install-recommends prometheus``; .ci/run installs it). Without it these
tests skip, saying so. Only the ``summary`` annotation is compared (the others
are long prose; ``check rules`` still parses their templates).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_chart_monitoring import EVERYTHING_ON, alert_rules, the_one
from tests.test_deployment import NAMESPACE, deep_merge, rendered_objects

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install -y --no-install-recommends prometheus",
)

FULLNAME = "sync-lfx-v1-sync-helper"
WORKER_JOB = f"{NAMESPACE}/{FULLNAME}-worker"
BRIDGE_JOB = f"{FULLNAME}-bridge"
CONSUMER = "v1-sync-helper-kv-consumer"
OTHER_NAMESPACE = "staging"
PROMTOOL_TIMEOUT = 60


def rule_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered PrometheusRule's groups."""
    groups: list[dict[str, Any]] = the_one(rendered_objects(values), "PrometheusRule")["spec"][
        "groups"
    ]
    return groups


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    return rule_groups(EVERYTHING_ON)


def summaries_only(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups with each alert's annotations cut to its summary."""
    trimmed = copy.deepcopy(groups)
    for group in trimmed:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    return trimmed


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT
    )


def run_rule_tests(
    groups: list[dict[str, Any]], tests: list[dict[str, Any]], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": summaries_only(groups)}))
    suite = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": tests,
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return promtool("test", "rules", "tests.yml", cwd=tmp_path)


def alert(
    labels: dict[str, str], summary: str, severity: str = "warning"
) -> dict[str, dict[str, str]]:
    """One expected alert: its labels (severity added) and its summary."""
    return {
        "exp_labels": {**labels, "severity": severity},
        "exp_annotations": {"summary": summary},
    }


def case(
    series: list[tuple[str, str]], checks: list[tuple[str, str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """One promtool test: series (selector, values) at 1m steps; (time, alert, expected)."""
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": expected}
            for at, name, expected in checks
        ],
    }


def sel(metric: str, namespace: str = NAMESPACE, **labels: str) -> str:
    """A series selector: ``metric{namespace=…,labels…}``."""
    pairs = {"namespace": namespace, **labels}
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


DEAD = "v1sync_dead_letters_total"
DEPTH = "v1sync_bridge_queue_depth"
PENDING = "jetstream_consumer_num_pending"
V2 = "v1sync_v2_request_seconds_count"
BEHIND = "v1sync_reconcile_keys_behind"
SWEPT = "v1sync_reconcile_last_sweep_timestamp_seconds"
REVERSE = "v1sync_v2_to_v1_outcomes_total"
FORWARD = "v1sync_task_outcomes_total"
V2_EVENTS_PENDING = "v1sync_bridge_v2_events_pending"
V1 = "v1sync_v1_request_seconds_count"

DEAD_LABELS = {"namespace": NAMESPACE, "object_type": "project", "error_kind": "invalid_record"}
DEAD_SUMMARY = f"{NAMESPACE}: project changes are landing in the dead letters (invalid_record)"
REVERSE_DEAD_LABELS = {"namespace": NAMESPACE, "object_type": "committee"}
REVERSE_DEAD_SUMMARY = f"{NAMESPACE}: V2 -> V1 committee changes are landing in the dead letters"
EVENTS_BEHIND = alert(
    {"namespace": NAMESPACE}, f"{NAMESPACE}: V2 events are waiting for the bridges"
)
PING_PONG = alert(
    {"namespace": NAMESPACE, "object_type": "committee"},
    f"{NAMESPACE}: both directions keep writing committee objects: echoes may not be recognized",
)

# Alert name -> promtool test cases proving it fires when it should and only then.
CASES: dict[str, list[dict[str, Any]]] = {
    "V1SyncDeadLettersGrowing": [
        # Growing: fires at once, with its object type and kind, per namespace.
        case(
            [
                (
                    sel(DEAD, object_type="project", error_kind="invalid_record", pod="w1"),
                    "0x10 1x30",
                ),
                (
                    sel(DEAD, OTHER_NAMESPACE, object_type="project", error_kind="invalid_record"),
                    "0x10 1x30",
                ),
            ],
            [
                ("5m", "V1SyncDeadLettersGrowing", []),
                ("12m", "V1SyncDeadLettersGrowing", [alert(DEAD_LABELS, DEAD_SUMMARY)]),
                # Ten minutes without a new one: quiet again.
                ("25m", "V1SyncDeadLettersGrowing", []),
            ],
        ),
        # The first dead letter of a series (no earlier sample to increase from).
        case(
            [(sel(DEAD, object_type="project", error_kind="invalid_record"), "_x10 1x30")],
            [("12m", "V1SyncDeadLettersGrowing", [alert(DEAD_LABELS, DEAD_SUMMARY)])],
        ),
    ],
    "V1SyncQueueBacklog": [
        # A burst the workers drain within minutes: quiet.
        case(
            [(sel(DEPTH, pod="b1"), "5000-500x10 0x50")],
            [(at, "V1SyncQueueBacklog", []) for at in ("5m", "10m", "15m", "20m", "40m")],
        ),
        # A steady small queue (below minDepth): quiet.
        case([(sel(DEPTH), "50x60")], [("45m", "V1SyncQueueBacklog", [])]),
        # Growing: fires after the 10 minutes of `for` (the window of a new
        # series is the part it has).
        case(
            [(sel(DEPTH, pod="b1"), "200+20x60")],
            [
                ("8m", "V1SyncQueueBacklog", []),
                (
                    "12m",
                    "V1SyncQueueBacklog",
                    [
                        alert(
                            {"namespace": NAMESPACE},
                            f"{NAMESPACE}: the Celery queue is not draining",
                        )
                    ],
                ),
            ],
        ),
        # Draining, but too slowly to be empty within the hour: fires too (an aged backlog).
        case(
            [(sel(DEPTH, pod="b1"), "8000-10x60")],
            [
                (
                    "30m",
                    "V1SyncQueueBacklog",
                    [
                        alert(
                            {"namespace": NAMESPACE},
                            f"{NAMESPACE}: the Celery queue is not draining",
                        )
                    ],
                )
            ],
        ),
        # The full stall the old rule alone saw: the bridges paused at the maximum.
        case(
            [(sel(DEPTH, pod="b1"), "10000x60"), (sel(DEPTH, pod="b2"), "10000x60")],
            [
                (
                    "30m",
                    "V1SyncQueueBacklog",
                    [
                        alert(
                            {"namespace": NAMESPACE},
                            f"{NAMESPACE}: the Celery queue is not draining",
                        )
                    ],
                )
            ],
        ),
    ],
    "V1SyncConsumerPendingGrowing": [
        case(
            [
                (
                    sel(PENDING, "nats", consumer_name=CONSUMER, stream_name="KV_v1-objects"),
                    "0+100x60",
                )
            ],
            [
                # delta() extrapolates over the first, partial window: 15 minutes of `for`.
                ("10m", "V1SyncConsumerPendingGrowing", []),
                (
                    "20m",
                    "V1SyncConsumerPendingGrowing",
                    [
                        alert(
                            {"namespace": "nats", "consumer_name": CONSUMER},
                            "JetStream consumer v1-sync-helper-kv-consumer falls behind",
                        )
                    ],
                ),
            ],
        ),
        # Another consumer's growth, and ours flat: quiet.
        case(
            [
                (sel(PENDING, "nats", consumer_name="someone-else"), "0+100x60"),
                (sel(PENDING, "nats", consumer_name=CONSUMER), "500x60"),
            ],
            [("35m", "V1SyncConsumerPendingGrowing", [])],
        ),
    ],
    "V1SyncNoWorkerOnline": [
        # Every worker target down: fires after 5 minutes, naming the namespace and job.
        case(
            [
                (sel("up", job=WORKER_JOB, pod="w1"), "1x5 0x30"),
                (sel("up", job=WORKER_JOB, pod="w2"), "1x5 0x30"),
            ],
            [
                ("8m", "V1SyncNoWorkerOnline", []),
                (
                    "12m",
                    "V1SyncNoWorkerOnline",
                    [
                        alert(
                            {"namespace": NAMESPACE, "job": WORKER_JOB},
                            f"{NAMESPACE}: no sync worker has answered a scrape for 5 minutes",
                            "critical",
                        )
                    ],
                ),
            ],
        ),
        # No worker target at all (scaled to zero): fires too, still with its namespace.
        case(
            [(sel("up", job=BRIDGE_JOB), "1x30")],
            [
                (
                    "10m",
                    "V1SyncNoWorkerOnline",
                    [
                        alert(
                            {"namespace": NAMESPACE, "job": WORKER_JOB},
                            f"{NAMESPACE}: no sync worker has answered a scrape for 5 minutes",
                            "critical",
                        )
                    ],
                )
            ],
        ),
        # One worker of two up; and workers of another release down: quiet.
        case(
            [
                (sel("up", job=WORKER_JOB, pod="w1"), "1x30"),
                (sel("up", job=WORKER_JOB, pod="w2"), "0x30"),
                (sel("up", OTHER_NAMESPACE, job=WORKER_JOB), "0x30"),
            ],
            [("20m", "V1SyncNoWorkerOnline", [])],
        ),
    ],
    "V1SyncBrokerDown": [
        case(
            [
                (sel("v1sync_bridge_broker_down", pod="b1"), "0x2 1x20 0x10"),
                (sel("v1sync_bridge_broker_down", pod="b2"), "0x30"),
            ],
            [
                ("4m", "V1SyncBrokerDown", []),
                (
                    "8m",
                    "V1SyncBrokerDown",
                    [
                        alert(
                            {"namespace": NAMESPACE, "pod": "b1"},
                            f"Bridge {NAMESPACE}/b1 cannot reach the Celery broker",
                            "critical",
                        )
                    ],
                ),
                ("28m", "V1SyncBrokerDown", []),
            ],
        )
    ],
    "V1SyncV2ErrorRateHigh": [
        # 10% of the project service's calls fail; the committee service is fine.
        case(
            [
                (sel(V2, service="project", method="POST", status="503"), "0+10x40"),
                (sel(V2, service="project", method="POST", status="201"), "0+90x40"),
                (sel(V2, service="committee", method="POST", status="error"), "0+1x40"),
                (sel(V2, service="committee", method="POST", status="201"), "0+99x40"),
            ],
            [
                ("10m", "V1SyncV2ErrorRateHigh", []),
                (
                    "20m",
                    "V1SyncV2ErrorRateHigh",
                    [
                        alert(
                            {"namespace": NAMESPACE, "service": "project"},
                            f"{NAMESPACE}/project: 10% of the V2 calls fail",
                        )
                    ],
                ),
            ],
        )
    ],
    "V1SyncKeysBehindReconciler": [
        # The lease holder reports keys stuck past the grace for 10 minutes.
        case(
            [(sel(BEHIND, pod="b1"), "3x30")],
            [
                ("5m", "V1SyncKeysBehindReconciler", []),
                (
                    "12m",
                    "V1SyncKeysBehindReconciler",
                    [
                        alert(
                            {"namespace": NAMESPACE},
                            f"{NAMESPACE}: 3 keys have stayed behind their V1 revision"
                            " for 10 minutes",
                        )
                    ],
                ),
            ],
        ),
        # A bulk load of parked children: the holder reports 0 (they are not
        # overdue); the former holder stopped exporting when it lost the lease.
        case(
            [
                (sel(BEHIND, pod="b1"), "4000x10 _x30"),
                (sel(BEHIND, pod="b2"), "_x10 0x30"),
            ],
            [("30m", "V1SyncKeysBehindReconciler", [])],
        ),
    ],
    "V1SyncNoBridgeOnline": [
        case(
            [(sel("up", job=BRIDGE_JOB, pod="b1"), "1x5 0x30")],
            [
                ("8m", "V1SyncNoBridgeOnline", []),
                (
                    "12m",
                    "V1SyncNoBridgeOnline",
                    [
                        alert(
                            {"namespace": NAMESPACE, "job": BRIDGE_JOB},
                            f"{NAMESPACE}: no bridge has answered a scrape for 5 minutes",
                            "critical",
                        )
                    ],
                ),
            ],
        ),
        case(
            [
                (sel("up", job=BRIDGE_JOB, pod="b1"), "1x30"),
                (sel("up", job=BRIDGE_JOB, pod="b2"), "0x30"),
            ],
            [("20m", "V1SyncNoBridgeOnline", [])],
        ),
    ],
    "V1SyncReconcilerNotSweeping": [
        # The holder sweeps every minute (the gauge keeps up with the clock); the
        # other bridge never swept (its start time): quiet.
        case(
            [
                (sel(SWEPT, pod="b1"), "0+60x40"),
                (sel(SWEPT, pod="b2"), "0x40"),
            ],
            [("35m", "V1SyncReconcilerNotSweeping", [])],
        ),
        # Sweeps stop at minute 10: past 4 intervals (240 s) plus the 5 of `for`, it fires.
        case(
            [
                (sel(SWEPT, pod="b1"), "0+60x10 600x30"),
                (sel(SWEPT, pod="b2"), "0x40"),
            ],
            [
                ("16m", "V1SyncReconcilerNotSweeping", []),
                (
                    "25m",
                    "V1SyncReconcilerNotSweeping",
                    [
                        alert(
                            {"namespace": NAMESPACE},
                            f"{NAMESPACE}: the reconciler has not swept for 15m 0s",
                        )
                    ],
                ),
            ],
        ),
    ],
    # -- The V2 -> V1 direction (config.syncV2ToV1) ------------------------------------
    "V1SyncV2ToV1DeadLettersGrowing": [
        # The direction's dead letters grow: fires at once, per object type and namespace;
        # its other outcomes growing fire nothing.
        case(
            [
                (
                    sel(REVERSE, object_type="committee", outcome="dead_lettered", pod="w1"),
                    "0x10 1x30",
                ),
                (
                    sel(REVERSE, OTHER_NAMESPACE, object_type="committee", outcome="dead_lettered"),
                    "0x10 1x30",
                ),
                (sel(REVERSE, object_type="committee_member", outcome="updated"), "0+5x40"),
            ],
            [
                ("5m", "V1SyncV2ToV1DeadLettersGrowing", []),
                (
                    "12m",
                    "V1SyncV2ToV1DeadLettersGrowing",
                    [alert(REVERSE_DEAD_LABELS, REVERSE_DEAD_SUMMARY)],
                ),
                ("25m", "V1SyncV2ToV1DeadLettersGrowing", []),
            ],
        ),
        # The first dead letter of a series (no earlier sample to increase from).
        case(
            [(sel(REVERSE, object_type="committee", outcome="dead_lettered"), "_x10 1x30")],
            [
                (
                    "12m",
                    "V1SyncV2ToV1DeadLettersGrowing",
                    [alert(REVERSE_DEAD_LABELS, REVERSE_DEAD_SUMMARY)],
                )
            ],
        ),
        # Dead letters of the V1 -> V2 direction alone: not this alert's.
        case(
            [
                (sel(DEAD, object_type="committee", error_kind="v2_validation"), "0x10 1+1x30"),
                (sel(REVERSE, object_type="committee", outcome="created"), "0+1x40"),
            ],
            [
                ("12m", "V1SyncV2ToV1DeadLettersGrowing", []),
                ("30m", "V1SyncV2ToV1DeadLettersGrowing", []),
            ],
        ),
    ],
    "V1SyncV2EventsConsumerBehind": [
        # Events stay unfetched (both bridges report the same count): after 15 minutes
        # never at 0 and 5 of `for`, it fires.
        case(
            [
                (sel(V2_EVENTS_PENDING, pod="b1"), "0x2 5x40"),
                (sel(V2_EVENTS_PENDING, pod="b2"), "0x2 5x40"),
            ],
            [
                ("15m", "V1SyncV2EventsConsumerBehind", []),
                ("25m", "V1SyncV2EventsConsumerBehind", [EVENTS_BEHIND]),
            ],
        ),
        # Edits arrive and are fetched within the minute: quiet.
        case(
            [(sel(V2_EVENTS_PENDING, pod="b1"), "0x5 3 0x5 8 0 0 2 0x30")],
            [
                ("30m", "V1SyncV2EventsConsumerBehind", []),
                ("45m", "V1SyncV2EventsConsumerBehind", []),
            ],
        ),
        # A backlog the bridges work down: quiet.
        case(
            [(sel(V2_EVENTS_PENDING, pod="b1"), "600-10x60")],
            [
                ("30m", "V1SyncV2EventsConsumerBehind", []),
                ("50m", "V1SyncV2EventsConsumerBehind", []),
            ],
        ),
    ],
    "V1SyncV1ErrorRateHigh": [
        # 10% of the committee calls fail; the member calls are fine; another
        # release's failures are not this one's.
        case(
            [
                (sel(V1, object_type="committee", method="PATCH", status="503"), "0+1x40"),
                (sel(V1, object_type="committee", method="PATCH", status="200"), "0+9x40"),
                (sel(V1, object_type="committee_member", method="POST", status="200"), "0+10x40"),
                (
                    sel(
                        V1, OTHER_NAMESPACE, object_type="committee", method="POST", status="error"
                    ),
                    "0+5x40",
                ),
            ],
            [
                ("8m", "V1SyncV1ErrorRateHigh", []),
                (
                    "20m",
                    "V1SyncV1ErrorRateHigh",
                    [
                        alert(
                            {"namespace": NAMESPACE, "object_type": "committee"},
                            f"{NAMESPACE}: 10% of the V1 committee calls fail",
                        )
                    ],
                ),
            ],
        ),
        # A few 4xx (V1 refusing a body: dead letters, not an outage): quiet.
        case(
            [
                (sel(V1, object_type="committee", method="POST", status="400"), "0+1x40"),
                (sel(V1, object_type="committee", method="POST", status="201"), "0+1x40"),
            ],
            [("30m", "V1SyncV1ErrorRateHigh", [])],
        ),
    ],
    "V1SyncV2ToV1PingPongSuspected": [
        # Every V1 -> V2 write of a committee is followed by a V2 -> V1 write: fires
        # after 10 minutes of `for`.
        case(
            [
                (sel(REVERSE, object_type="committee", outcome="updated"), "0+2x60"),
                (sel(FORWARD, object_type="committee", outcome="updated"), "0+2x60"),
            ],
            [
                ("3m", "V1SyncV2ToV1PingPongSuspected", []),
                ("25m", "V1SyncV2ToV1PingPongSuspected", [PING_PONG]),
            ],
        ),
        # A V1 -> V2 bulk load whose events the V2 -> V1 side skips as echoes, with a
        # few edits in V2 meanwhile: quiet.
        case(
            [
                (sel(FORWARD, object_type="committee", outcome="created"), "0+50x60"),
                (sel(REVERSE, object_type="committee", outcome="skipped:echo"), "0+50x60"),
                (sel(REVERSE, object_type="committee", outcome="updated"), "0+1x60"),
            ],
            [
                ("20m", "V1SyncV2ToV1PingPongSuspected", []),
                ("50m", "V1SyncV2ToV1PingPongSuspected", []),
            ],
        ),
        # People editing in V2 only: the V1 -> V2 side stays quiet, so does the alert;
        # project writes are not the direction's.
        case(
            [
                (sel(REVERSE, object_type="committee", outcome="updated"), "0+3x60"),
                (sel(FORWARD, object_type="project", outcome="updated"), "0+3x60"),
                (sel(FORWARD, object_type="committee", outcome="updated"), "0x60"),
            ],
            [
                ("20m", "V1SyncV2ToV1PingPongSuspected", []),
                ("50m", "V1SyncV2ToV1PingPongSuspected", []),
            ],
        ),
    ],
}


def test_promtool_loads_every_rendered_rule(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    result = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in result.stdout


def test_every_alert_has_promtool_cases(groups: list[dict[str, Any]]) -> None:
    assert sorted(CASES) == sorted(r["alert"] for g in groups for r in g["rules"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_alert_fires_when_it_should_and_only_then(
    name: str, groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = run_rule_tests(groups, CASES[name], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_tests_can_fail(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    # The growing queue case, expected quiet: promtool must say it fired.
    growing = copy.deepcopy(CASES["V1SyncQueueBacklog"][2])
    growing["alert_rule_test"][1]["exp_alerts"] = []
    result = run_rule_tests(groups, [growing], tmp_path)
    assert result.returncode != 0
    assert "V1SyncQueueBacklog" in result.stdout + result.stderr


def test_the_rule_follows_its_values(tmp_path: Path) -> None:
    values = deep_merge(
        EVERYTHING_ON,
        {
            "bridge": {"reconcileInterval": 300},
            "monitoring": {
                "prometheusRule": {
                    "missedSweeps": 1,
                    "queueBacklog": {"minDepth": 5000, "drainWithinSeconds": 600},
                }
            },
        },
    )
    rules = {r["alert"]: r for r in alert_rules(rendered_objects(values))}
    assert "> 600" in rules["V1SyncReconcilerNotSweeping"]["expr"]
    assert "> 5000" in rules["V1SyncQueueBacklog"]["expr"]
    assert ", 600)" in rules["V1SyncQueueBacklog"]["expr"]
    # The growing queue of the default case stays under this minDepth: quiet now.
    growing = copy.deepcopy(CASES["V1SyncQueueBacklog"][2])
    growing["alert_rule_test"][1]["exp_alerts"] = []
    groups = rule_groups(values)
    result = run_rule_tests(groups, [growing], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_direction_rules_follow_their_values(tmp_path: Path) -> None:
    values = deep_merge(
        EVERYTHING_ON,
        {
            "monitoring": {
                "prometheusRule": {
                    "v2ToV1": {
                        "v1ErrorRateThreshold": 0.2,
                        "pingPong": {"minWrites": 10, "writeRatio": 0.01},
                    }
                }
            }
        },
    )
    groups = rule_groups(values)
    # 10% of the committee calls failing is under 20%: quiet now.
    failing = copy.deepcopy(CASES["V1SyncV1ErrorRateHigh"][0])
    failing["alert_rule_test"][1]["exp_alerts"] = []
    # The bulk load with a few V2 edits makes 30 V2 -> V1 writes against 1500: at a
    # ratio of 0.01 that is suspicious too.
    bulk = copy.deepcopy(CASES["V1SyncV2ToV1PingPongSuspected"][1])
    bulk["alert_rule_test"][1]["exp_alerts"] = [PING_PONG]
    result = run_rule_tests(groups, [failing, bulk], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Fewer writes than minWrites on either side: the loop case stays quiet.
    values = deep_merge(
        EVERYTHING_ON,
        {"monitoring": {"prometheusRule": {"v2ToV1": {"pingPong": {"minWrites": 100}}}}},
    )
    loop = copy.deepcopy(CASES["V1SyncV2ToV1PingPongSuspected"][0])
    loop["alert_rule_test"][1]["exp_alerts"] = []
    result = run_rule_tests(rule_groups(values), [loop], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
