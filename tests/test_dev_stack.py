"""``v1-sync-helper dev --exit-when-synced``: the whole pipeline on the local stack.

Runs the real command (nats-server, valkey, sandbox, bridge, worker, Flower)
and checks what reached the sandbox object by object against the sample data,
the deletes included: deleted objects gone (deleted by the expected principal)
with their mappings tombstoned, refused ones still there with their mappings,
the re-puts not re-created, and the summary's delete counts. ``make run`` has the
V2 -> V1 switch on (``sandbox.stack.DEV_V2_TO_V1_ENV``): the bridge creates the
V2 events' stream and the sandbox's committee writes land in it; after the
forward phases a person edits committees and members in V2
(``sandbox.v2_edits``), so V2 must end as the expectations after those edits,
and each edit must reach V1 once, its echo skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sandbox.dev_session import external_mode
from sandbox.samples import (
    delete_accepted,
    expected_deleter,
    expected_writer,
    load_expected,
    stays_in_v2,
)
from sandbox.stack import AUTH0_CLIENT_ID
from sandbox.v2_edits import (
    EDITS,
    NEW_KEY_PREFIX,
    PERSON,
    Action,
    edits_for,
    expected_after_edits,
)
from v1_sync_helper.cli import main

HEIMDALL_CLIENT_ID = "v1_sync_helper"
DEV_TIMEOUT = 180
# How long the stack gets to stop on SIGTERM before its process group is killed.
STOP_GRACE_SECONDS = 15

# The module's run takes up to DEV_TIMEOUT in the first test's setup: the
# subprocess's own deadline must come first, so that its processes are stopped.
pytestmark = pytest.mark.timeout(DEV_TIMEOUT + STOP_GRACE_SECONDS + 30)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "REDIS_"))}
    for name in ("PROJECT_SERVICE_URL", "COMMITTEE_SERVICE_URL", "FLOWER_BASIC_AUTH"):
        env.pop(name, None)
    for name in ("SYNC_V2_TO_V1", "V2_EVENTS_STREAM", "V2_EVENTS_SUBJECTS", "V2_EVENTS_MAX_AGE"):
        env.pop(name, None)
    return env


def _port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("dev")
    run_dir = workdir / ".run"  # the default, relative to the working directory, as `make run`
    state_file = workdir / "state.json"
    command = [sys.executable, "-m", "v1_sync_helper", "dev", "--exit-when-synced"]
    command += ["--timeout", "150", "--dump-state", str(state_file)]
    result = _run_in_own_group(command, workdir)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    stack = json.loads((run_dir / "stack.json").read_text())
    return {"result": result, "state": state, "stack": stack, "run_dir": run_dir}


def _run_in_own_group(
    command: list[str], workdir: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; past DEV_TIMEOUT, SIGTERM it so that it stops its stack.

    ``subprocess.run``'s timeout (and pytest-timeout before it) SIGKILLs only
    the child, and the servers and processes the dev command started outlived
    the test. SIGTERM is the dev command's own stop (it stops everything it
    started); SIGKILL of its group is the last resort.
    """
    process = subprocess.Popen(
        command,
        env={**_clean_env(), **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=DEV_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"dev did not finish in {DEV_TIMEOUT}s:\n{stdout[-3000:]}{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _after_edits() -> dict[str, Any]:
    """The sample expectations once the person's V2 edits are made (the switch is on)."""
    return expected_after_edits(load_expected())


def _expected() -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = _after_edits()["keys"]
    return keys


def _in_v2(kind: str) -> list[dict[str, Any]]:
    """The expectations of ``kind`` whose object V2 holds at the end (refused deletes too)."""
    return [v for v in _expected().values() if v.get("type") == kind and stays_in_v2(v)]


def _summary_line(name: str, count: int) -> str:
    return f"  {name:<14} {count}"


def test_dev_exits_0_after_the_summary(dev_run: dict[str, Any]) -> None:
    result = dev_run["result"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Summary" in result.stdout
    lines = result.stdout.splitlines()
    dead = sum(
        1
        for v in _expected().values()
        if v["outcome"] == "dead_letter" and v["reason"] != "delete_refused"
    )
    assert _summary_line("dead_lettered", dead) in lines
    counts = _after_edits()["counts"]
    for name in ("deleted", "delete_refused", "skipped:tombstoned", "skipped:not_in_v2"):
        assert _summary_line(name, counts[name]) in lines, name
    assert counts["deleted"] > 0
    assert f"{counts['members_in_v2']} committee members" in result.stdout
    phases = load_expected()["counts"]["phases"]
    assert f"Phase {phases}/{phases}: wrote" in result.stdout
    assert f"Phase {phases + 1} (V2 edits): {PERSON.principal} made {len(EDITS)} edits" in (
        result.stdout
    )


def test_every_sample_project_has_its_fields_parent_and_writer(dev_run: dict[str, Any]) -> None:
    state = dev_run["state"]
    by_slug = {p["slug"]: (uid, p) for uid, p in state["projects"].items()}
    expected = _expected()
    slug_of = {
        v["sfid"]: v["fields"]["slug"] for v in expected.values() if v.get("type") == "project"
    }
    projects = _in_v2("project")
    assert len(projects) >= 30
    for want in projects:
        slug = want["fields"]["slug"]
        assert slug in by_slug, f"project {slug} missing"
        _, got = by_slug[slug]
        for name, value in want["fields"].items():
            assert got.get(name) == value, f"{slug}.{name}: {got.get(name)!r} != {value!r}"
        for name in want["dropped"]:
            assert name not in got, f"{slug}.{name} should have been dropped"
        parent = want["parent_sfid"]
        parent_uid = state["root_uid"] if parent is None else by_slug[slug_of[parent]][0]
        assert got["parent_uid"] == parent_uid, f"{slug}: wrong parent"
        writer = expected_writer(want, HEIMDALL_CLIENT_ID)
        last = got["_last_write"]
        assert {k: last.get(k) for k in writer} == writer, f"{slug}: wrong principal"
    assert len(state["projects"]) == len(projects) + 1  # plus ROOT


def test_every_sample_committee_is_under_its_project(dev_run: dict[str, Any]) -> None:
    state = dev_run["state"]
    uid_of_sfid = {}
    for v in _in_v2("project"):
        uid_of_sfid[v["sfid"]] = next(
            uid for uid, p in state["projects"].items() if p["slug"] == v["fields"]["slug"]
        )
    committees = _in_v2("committee")
    assert len(committees) >= 60
    stored = {(c["project_uid"], c["name"]): c for c in state["committees"].values()}
    for want in committees:
        place = (uid_of_sfid[want["project_sfid"]], want["fields"]["name"])
        assert place in stored, f"committee {place} missing"
        got = stored[place]
        for name, value in want["fields"].items():
            assert got.get(name) == value, f"{place}.{name}: {got.get(name)!r} != {value!r}"
        writer = expected_writer(want, HEIMDALL_CLIENT_ID)
        assert {k: got["_last_write"].get(k) for k in writer} == writer
    assert len(state["committees"]) == len(committees)


def test_every_sample_member_is_in_its_committee(dev_run: dict[str, Any]) -> None:
    state = dev_run["state"]
    project_uid = {
        v["sfid"]: next(
            uid for uid, p in state["projects"].items() if p["slug"] == v["fields"]["slug"]
        )
        for v in _in_v2("project")
    }
    committee_uid = {
        v["sfid"]: next(
            uid
            for uid, c in state["committees"].items()
            if (c["project_uid"], c["name"])
            == (project_uid[v["project_sfid"]], v["fields"]["name"])
        )
        for v in _in_v2("committee")
    }
    members = _in_v2("committee_member")
    assert len(members) >= 200
    stored = {
        (m["committee_uid"], m["email"].strip().lower()): m for m in state["members"].values()
    }
    for want in members:
        place = (committee_uid[want["committee_sfid"]], want["fields"]["email"].strip().lower())
        assert place in stored, f"member {place} missing"
        got = stored[place]
        for name, value in want["fields"].items():
            assert got.get(name) == value, f"{place}.{name}: {got.get(name)!r} != {value!r}"
        for name in want["dropped"]:
            assert name not in got, f"{place}.{name} should have been dropped"
        writer = expected_writer(want, HEIMDALL_CLIENT_ID)
        assert {k: got["_last_write"].get(k) for k in writer} == writer
        # The sync never lets V2 send a welcome e-mail; a person adding a member does.
        assert got["_skip_notification"] is not want["sfid"].startswith(NEW_KEY_PREFIX)
    assert len(state["members"]) == len(members)


def test_exactly_the_malformed_records_are_dead_lettered(dev_run: dict[str, Any]) -> None:
    wanted = {k: v["reason"] for k, v in _expected().items() if v["outcome"] == "dead_letter"}
    assert dev_run["state"]["dead_letters"] == wanted


def test_every_accepted_delete_removed_its_object_as_the_expected_principal(
    dev_run: dict[str, Any],
) -> None:
    state = dev_run["state"]
    deleted = state["deleted"]
    accepted = [v for v in _expected().values() if delete_accepted(v)]
    assert len(accepted) == len(deleted) == _after_edits()["counts"]["deleted"]
    for want in accepted:
        label = f"{want['type']} {want['sfid']} ({want['delete']['shape']})"
        found = [uid for uid, d in deleted.items() if _same_object(d, want)]
        assert len(found) == 1, f"{label}: not deleted through the V2 API"
        uid = found[0]
        by = deleted[uid]["_deleted_by"]
        writer = expected_deleter(want, HEIMDALL_CLIENT_ID)
        assert {k: by.get(k) for k in writer} == writer, f"{label}: wrong deleter"
        prefix = "committee_member" if want["type"] == "committee_member" else want["type"]
        # Tombstones: forward and reverse, and a re-put did not bring the object back.
        assert state["mappings"][f"{prefix}.sfid.{want['sfid']}"] == "!del", label
        assert state["mappings"][f"{prefix}.uid.{uid}"] == "!del", label
        live = {"project": "projects", "committee": "committees"}.get(want["type"], "members")
        assert uid not in state[live], f"{label}: still in the sandbox"


def _same_object(deleted: dict[str, Any], want: dict[str, Any]) -> bool:
    fields = want["fields"]
    if want["type"] == "project":
        return bool(deleted["_deleted_from"] == "projects" and deleted["slug"] == fields["slug"])
    if want["type"] == "committee":
        return bool(deleted["_deleted_from"] == "committees" and deleted["name"] == fields["name"])
    return bool(
        deleted["_deleted_from"] == "members"
        and deleted["email"].strip().lower() == fields["email"].strip().lower()
    )


def test_refused_deletes_keep_the_object_and_its_mappings(dev_run: dict[str, Any]) -> None:
    state = dev_run["state"]
    refused = {k: v for k, v in _expected().items() if "delete" in v and not delete_accepted(v)}
    assert len(refused) == load_expected()["counts"]["delete_refused"] >= 2
    for key, want in refused.items():
        uid = next(u for u, p in state["projects"].items() if p["slug"] == want["fields"]["slug"])
        assert state["mappings"][f"project.sfid.{want['sfid']}"] == uid
        assert state["mappings"][f"project.uid.{uid}"] == want["sfid"]
        assert state["dead_letters"][key] == "delete_refused"
    assert state["outcomes"].get("delete_refused") == len(refused)


def test_the_summary_counts_match_the_durable_outcomes(dev_run: dict[str, Any]) -> None:
    outcomes = dev_run["state"]["outcomes"]
    counts = _after_edits()["counts"]
    for name in ("deleted", "delete_refused", "skipped:tombstoned", "skipped:not_in_v2"):
        assert outcomes.get(name, 0) == counts[name], name


def test_the_v2_to_v1_switch_is_on_and_the_stream_captures_the_sandbox_writes(
    dev_run: dict[str, Any],
) -> None:
    state = dev_run["state"]
    events = state["v2_events"]
    assert events["stream"] == "committee_events"
    # Every committee and member V2 holds was created once, each create published an event.
    assert len(state["committees"]) + len(state["members"]) > 0
    assert events["captured"] >= len(state["committees"]) + len(state["members"])
    bridge_log = (Path(dev_run["run_dir"]) / "logs" / "bridge.log").read_text()
    created = [json.loads(line) for line in bridge_log.splitlines() if '"stream created"' in line]
    assert [entry.get("stream") for entry in created] == ["committee_events"]
    summary = f"  V2 -> V1       on: {events['captured']} V2 indexer events captured in"
    assert summary in dev_run["result"].stdout


def _v2_to_v1(dev_run: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = dev_run["state"]["v2_to_v1"]
    return section


def test_each_v2_edit_is_in_its_v1_row_as_the_v1_api_wrote_it(dev_run: dict[str, Any]) -> None:
    results = _v2_to_v1(dev_run)["edits"]
    assert [r["label"] for r in results] == [edit.label for edit in EDITS]
    for edit, result in zip(EDITS, results, strict=True):
        row = result["v1_row"]
        assert row is not None, edit.label
        assert {c: row.get(c) for c in edit.v1_columns} == dict(edit.v1_columns), edit.label
        assert row["lastmodifiedbyid"] == f"{AUTH0_CLIENT_ID}@clients", edit.label
        assert result["problems"] == [], edit.label
    removed = edits_for((Action.DELETE_MEMBER,))
    assert removed
    assert all(edit.v1_columns["isdeleted"] is True for edit in removed)


def test_each_object_the_edits_created_is_one_v1_row(dev_run: dict[str, Any]) -> None:
    created = (Action.CREATE_COMMITTEE, Action.ADD_MEMBER)
    results = _v2_to_v1(dev_run)["edits"]
    rows = [r["rows"] for edit, r in zip(EDITS, results, strict=True) if edit.action in created]
    assert len(rows) >= 3
    assert rows == [1] * len(rows)


def test_the_v1_api_received_only_the_edits_writes_and_their_echoes_were_skipped(
    dev_run: dict[str, Any],
) -> None:
    section = _v2_to_v1(dev_run)
    # No V1 write for any of the hundreds of objects the forward path created: their
    # V2 events were echoes. Exactly one per edit.
    created = len(edits_for((Action.CREATE_COMMITTEE, Action.ADD_MEMBER)))
    updated = len(edits_for((Action.UPDATE_COMMITTEE, Action.UPDATE_MEMBER)))
    deleted = len(edits_for((Action.DELETE_MEMBER,)))
    assert section["v1_writes"] == {"created": created, "updated": updated, "deleted": deleted}
    # Each row the V1 API wrote back was skipped by the forward path, and no V2
    # write but the person's followed the edits.
    assert section["v1_rows_skipped_as_echo"] == section["v1_rows_written_back"] == len(EDITS)
    assert section["problems"] == []
    assert section["dead_letters"] == 0
    state = dev_run["state"]
    # Every committee and member the forward path created published an event it skipped.
    forward_objects = len(state["committees"]) + len(state["members"]) - created
    assert section["v2_events_skipped_as_echo"] >= forward_objects > 300
    stdout = dev_run["result"].stdout
    assert f"V1 writes: {created} created, {updated} updated, {deleted} deleted" in stdout
    assert (
        f"echoes skipped: {section['v2_events_skipped_as_echo']} V2 events (this service's "
        f"own writes), {len(EDITS)}/{len(EDITS)} V1 rows the V1 API wrote back"
    ) in stdout
    assert "                 dead letters: 0" in stdout.splitlines()


def test_every_process_is_stopped_afterwards(dev_run: dict[str, Any]) -> None:
    stack = dev_run["stack"]
    assert not _port_open(stack["nats_url"])
    assert not _port_open(stack["redis_url"])
    assert not _port_open(stack["sandbox_url"])


def test_a_switch_that_is_not_a_boolean_stops_the_stack_before_the_pipeline(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-m", "v1_sync_helper", "dev", "--exit-when-synced"]
    result = _run_in_own_group(command, tmp_path, {"SYNC_V2_TO_V1": "maybe"})
    assert result.returncode == 1
    assert "SYNC_V2_TO_V1='maybe' is not a boolean" in result.stderr
    assert not (tmp_path / ".run" / "logs" / "bridge.log").exists()


def test_keys_are_generated_once_and_private(dev_run: dict[str, Any]) -> None:
    keys = Path(dev_run["run_dir"]) / "keys"
    for name in ("heimdall.pem", "auth0.pem"):
        assert (keys / name).stat().st_mode & 0o077 == 0


def test_external_mode_needs_all_three_urls() -> None:
    urls = {
        "NATS_URL": "nats://n:4222",
        "REDIS_URL": "redis://r:6379/0",
        "PROJECT_SERVICE_URL": "https://projects",
    }
    assert external_mode(urls)
    for name in urls:
        assert not external_mode({k: v for k, v in urls.items() if k != name})


def test_dev_put_without_a_running_stack_says_so(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_text("{}")
    result = CliRunner().invoke(
        main, ["dev", "put", "salesforce-project__c.x", str(record), "--run-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "make run" in result.output
