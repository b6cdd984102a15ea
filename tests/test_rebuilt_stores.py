"""Nothing silently skipped after a store is rebuilt (issue 22), on the real pipeline.

Records go through the bridge and a threads worker into the sandbox V2; then a
store is rebuilt as an operator would:

- ``v1-objects`` deleted and created again, and loaded with the same keys
  (some changed) and new ones: its revisions start again at 1, below the ones
  ``v1-sync-state`` and the Redis markers hold;
- ``v1-mappings`` emptied (deleted and created again, or its stream purged),
  ``v1-sync-state`` kept: every key looks settled but has no mapping;
- ``v1-sync-state`` emptied, the other buckets kept.

In each case the bridge's own tasks are lost (a bridge that acked everything
without enqueueing), so only the reconciler can bring the keys back. Every key
must converge in V2 within two reconciler sweeps, with no duplicate object,
and with no operator action.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.reconciler import Reconciler
from sync_core.epochs import bucket_epoch
from sync_core.nats_client import OBJECTS_BUCKET_HISTORY, ensure_bucket
from sync_core.settings import BridgeSettings
from sync_core.sync_state import SweepSummary
from tasks.run.sync import SYNCED_PREFIX
from tests.bridge_harness import BackgroundBridge
from tests.test_task_sync import (  # noqa: F401 - the module-scoped stack fixture
    MAPPINGS,
    OBJECTS,
    STATE,
    Stack,
    _ack_everything,
    new_committee,
    new_project,
    stack,
)

INTERVAL = 0.5
GRACE = 1.0
# Two sweeps (the first may find the changes younger than the grace), plus the
# time the runs themselves take on a loaded test machine.
CONVERGE_WITHIN = 2 * INTERVAL + GRACE + 8.0
POLL = 0.05
PROJECTS = 4


@pytest.fixture
def st(stack: Stack) -> Iterator[Stack]:  # noqa: F811
    stack.sandbox.reset_requests()
    stack.sandbox.clear_faults()
    yield stack
    stack.sandbox.clear_faults()


@pytest.fixture
def sweeps(monkeypatch: pytest.MonkeyPatch) -> list[SweepSummary]:
    """The summary of every reconciler sweep from now on, in order."""
    found: list[SweepSummary] = []
    original = Reconciler.sweep

    async def recording(self: Reconciler) -> SweepSummary:
        summary = await original(self)
        found.append(summary)
        return summary

    monkeypatch.setattr(Reconciler, "sweep", recording)
    return found


def redriven_within_two_sweeps(found: list[SweepSummary]) -> None:
    """The reconciler re-drove what was needed in its first two sweeps, nothing after."""
    assert sum(summary.reenqueued for summary in found[:2]) > 0
    assert [summary.reenqueued for summary in found[2:]] == [0] * len(found[2:])


def rebuild(st: Stack, bucket: str, history: int = 1) -> None:
    """Delete KV bucket ``bucket`` and create it again, empty."""

    async def go() -> None:
        await st.nats.js.delete_key_value(bucket)
        await ensure_bucket(st.nats.js, bucket, history)

    st.nats.run(go())


def purge(st: Stack, bucket: str) -> None:
    """Empty KV bucket ``bucket`` by purging its stream (the bucket itself stays)."""
    st.nats.run(st.nats.js.purge_stream(f"KV_{bucket}"))


def lose_the_bridge_tasks(st: Stack) -> None:
    """Every change acked by a bridge whose tasks never reached a worker."""
    asyncio.run(_ack_everything(st.runtime.settings.nats_url))


def reconciling_bridge(st: Stack) -> BackgroundBridge:
    settings = st.runtime.settings
    return BackgroundBridge(
        BridgeSettings(
            nats_url=settings.nats_url,
            redis_url=settings.redis_url,
            port=0,
            bind="127.0.0.1",
            reconcile_interval=INTERVAL,
            reconcile_grace=GRACE,
        )
    )


def wait_until(what: str, done: Any, within: float = CONVERGE_WITHIN) -> float:
    """Seconds until ``done()`` held; fails after ``within``."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < within, f"not within {within} s: {what}"
        time.sleep(POLL)
    return time.monotonic() - started


def sync_through_the_pipeline(st: Stack, records: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Put ``records`` and let a bridge sync them; their revisions."""
    revisions = {key: st.put(key, value) for key, value in records.items()}
    with reconciling_bridge(st):
        for key, revision in revisions.items():
            assert st.wait_final(key, revision) in {"created", "updated", "unchanged"}
    return revisions


def projects_with_slug(st: Stack, slug: str) -> list[dict[str, Any]]:
    return [p for p in st.sandbox.projects.values() if p.get("slug") == slug.lower()]


def description_of(st: Stack, project: dict[str, Any]) -> str | None:
    found = st.sandbox.project_by_slug(project["slug__c"].lower())
    return None if found is None else found.get("description")


def test_a_rebuilt_objects_bucket_syncs_new_and_changed_records(
    st: Stack, sweeps: list[SweepSummary]
) -> None:
    """Revisions restart at 1: the old, higher ones in the state and markers mean nothing."""
    old = dict(new_project() for _ in range(PROJECTS))
    sync_through_the_pipeline(st, old)
    old_epoch = st.nats.run(bucket_epoch(st.nats.js, OBJECTS))
    uids = {key: st.state(key).uid for key in old}

    rebuild(st, OBJECTS, OBJECTS_BUCKET_HISTORY)
    assert st.nats.run(bucket_epoch(st.nats.js, OBJECTS)) != old_epoch
    changed = {key: {**value, "description__c": f"changed {key}"} for key, value in old.items()}
    kept_key = next(iter(old))
    changed[kept_key] = old[kept_key]  # put again unchanged
    fresh = dict(new_project() for _ in range(2))
    load = {**changed, **fresh}
    revisions = {key: st.put(key, value) for key, value in load.items()}
    # The new revisions are at or below the old ones: the old code saw them as synced.
    assert all(revisions[key] <= st.state(key).revision for key in old)
    lose_the_bridge_tasks(st)
    st.sandbox.reset_requests()
    sweeps.clear()

    with reconciling_bridge(st):
        took = wait_until(
            "every key of the new life synced",
            lambda: (
                all(description_of(st, value) == value["description__c"] for value in load.values())
                and all(st.state(key).revision == revisions[key] for key in load)
            ),
        )
    assert took < CONVERGE_WITHIN
    redriven_within_two_sweeps(sweeps)
    new_epoch = st.nats.run(bucket_epoch(st.nats.js, OBJECTS))
    for key, value in load.items():
        state = st.state(key)
        assert (state.revision, state.epoch) == (revisions[key], new_epoch), key
        assert len(projects_with_slug(st, value["slug__c"])) == 1, key
    for key in old:
        assert st.state(key).uid == uids[key]  # the same V2 objects, updated
    assert st.state(kept_key).outcome == "unchanged"
    assert st.sandbox.count("POST", "/projects") == len(fresh)  # only the new records


@pytest.mark.parametrize("emptied", ["rebuilt", "purged"])
def test_an_emptied_mappings_bucket_finds_the_v2_objects_again(
    st: Stack, sweeps: list[SweepSummary], emptied: str
) -> None:
    """The state says settled, the mappings are gone: adopted through 409, nothing duplicated."""
    project_key, project = new_project()
    committee_key, committee = new_committee(project["sfid"])
    others = dict(new_project() for _ in range(PROJECTS - 1))
    records = {project_key: project, committee_key: committee, **others}
    revisions = sync_through_the_pipeline(st, {project_key: project})
    revisions.update(sync_through_the_pipeline(st, {committee_key: committee, **others}))
    forward = {
        project_key: f"project.sfid.{project['sfid']}",
        committee_key: f"committee.sfid.{committee['sfid']}",
        **{key: f"project.sfid.{value['sfid']}" for key, value in others.items()},
    }
    uids = {key: st.mapping(mapping) for key, mapping in forward.items()}
    assert all(uids.values())

    if emptied == "rebuilt":
        rebuild(st, MAPPINGS)
    else:
        purge(st, MAPPINGS)
    assert all(st.mapping(mapping) is None for mapping in forward.values())
    st.sandbox.reset_requests()
    sweeps.clear()

    with reconciling_bridge(st):
        took = wait_until(
            "every forward mapping back",
            lambda: all(st.mapping(mapping) == uids[key] for key, mapping in forward.items()),
        )
    assert took < CONVERGE_WITHIN
    redriven_within_two_sweeps(sweeps)
    # Adopted, not created again: one V2 object each, the one mapped before.
    for key, value in {project_key: project, **others}.items():
        (found,) = projects_with_slug(st, value["slug__c"])
        assert found["uid"] == uids[key]
    (found,) = st.sandbox.committees_of(uids[project_key] or "")
    assert found["uid"] == uids[committee_key]
    assert st.mapping(f"project.uid.{uids[project_key]}") == project["sfid"]
    for key in records:
        assert st.state(key).revision == revisions[key]


def test_an_emptied_state_bucket_resyncs_every_key_as_unchanged(
    st: Stack, sweeps: list[SweepSummary]
) -> None:
    """Every key looks behind; V2 matches, so nothing is written there."""
    records = dict(new_project() for _ in range(PROJECTS))
    revisions = sync_through_the_pipeline(st, records)
    rebuild(st, STATE)
    assert all(st.state(key).revision == -1 for key in records)
    st.sandbox.reset_requests()
    sweeps.clear()

    with reconciling_bridge(st):
        took = wait_until(
            "every key settled again",
            lambda: all(st.state(key).revision == revisions[key] for key in records),
        )
    assert took < CONVERGE_WITHIN
    redriven_within_two_sweeps(sweeps)
    for key in records:
        assert st.state(key).outcome == "unchanged"
    writes = [r for r in st.sandbox.requests if r.method in {"POST", "PUT", "PATCH", "DELETE"}]
    assert writes == []


def test_a_task_of_a_life_that_is_gone_ends_superseded_without_calling_v2(st: Stack) -> None:
    """A task queued before the bucket was rebuilt: its revision names a stranger now."""
    key, project = new_project()
    revision = st.put(key, project)
    current = st.nats.run(bucket_epoch(st.nats.js, OBJECTS))
    st.sandbox.reset_requests()
    assert st.sync(key, revision, epoch=current - 1) == "superseded"
    (run,) = st.outcomes.of(key)
    assert run.__dict__["reason"] == "older_bucket_life"
    assert st.sandbox.requests == []
    assert st.state(key).revision == -1
    assert st.sync(key, revision, count=2, epoch=current) == "created"  # this life's task


def test_a_duplicate_run_of_a_synced_key_whose_mapping_is_gone_finds_its_object_again(
    st: Stack,
) -> None:
    """The run notices too (when no Redis marker answers first): settled needs the mapping."""
    key, project = new_project()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    mapping = f"project.sfid.{project['sfid']}"
    uid = st.mapping(mapping)
    st.nats.run(st.nats.kv(MAPPINGS).purge(mapping))
    st.redis.delete(SYNCED_PREFIX + key)  # Redis lost: the durable state answers
    st.sandbox.reset_requests()
    assert st.sync(key, revision, count=2) == "unchanged"
    assert st.mapping(mapping) == uid
    assert len(projects_with_slug(st, project["slug__c"])) == 1
    assert st.sandbox.count("POST", "/projects") == 1  # answered 409, adopted


def test_a_duplicate_run_of_a_synced_and_mapped_key_reads_nothing_more_from_v2(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    st.redis.delete(SYNCED_PREFIX + key)
    st.sandbox.reset_requests()
    assert st.sync(key, revision, count=2) == "unchanged"
    assert st.sandbox.requests == []
