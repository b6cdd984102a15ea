"""The per-key lease in the durable sync state, against a real nats-server."""

from __future__ import annotations

import time

import pytest

from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET, PendingRun, RunState
from tasks.stores.id_mappings import MappingStore
from tasks.stores.leases import (
    LEASE_TTL_SECONDS,
    RENEWALS,
    KeyLock,
    LeaseLost,
    check_write_allowed,
)
from tasks.stores.sync_state import StateStore

KEY = "salesforce-project__c.a0941000002wBz9AAE"


@pytest.fixture
def store(sync_nats: SyncNats) -> StateStore:
    return StateStore(sync_nats, DEFAULT_STATE_BUCKET)


def test_second_holder_is_refused_until_release(store: StateStore) -> None:
    first, second = KeyLock(store, KEY), KeyLock(store, KEY)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
    assert store.get(KEY).lease is None


def test_leases_of_different_keys_are_independent(store: StateStore) -> None:
    one, other = KeyLock(store, KEY), KeyLock(store, KEY + "X")
    assert one.acquire()
    assert other.acquire()


def test_the_lease_is_seconds_not_the_task_time_limit(store: StateStore) -> None:
    lease = KeyLock(store, KEY)
    assert lease.acquire()
    stored = store.get(KEY).lease
    assert stored is not None
    assert 0 < stored.expires - time.time() <= LEASE_TTL_SECONDS


def test_a_dead_holder_blocks_the_key_for_its_short_ttl_only(store: StateStore) -> None:
    """A holder that stops renewing (SIGKILL) frees the key once the TTL ran out."""
    dead = KeyLock(store, KEY, ttl=0.5)
    assert dead.acquire()  # and never renews nor releases
    started = time.monotonic()
    new = KeyLock(store, KEY)
    deadline = started + 5
    while not new.acquire():
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.02)
    assert time.monotonic() - started < 2
    # The old holder finds out at its next renewal and may write no more.
    assert not dead.renew()
    with pytest.raises(LeaseLost):
        dead.check()
    dead.release()  # must not drop the new holder's lease
    current = store.get(KEY).lease
    assert current is not None
    assert current.token == new.token


def test_renewal_keeps_a_long_run_holding(store: StateStore) -> None:
    lease = KeyLock(store, KEY, ttl=0.6, renew_every=0.1)
    assert lease.acquire()
    with lease:
        time.sleep(1.2)  # twice the TTL: only the renewals keep it
        assert lease.valid()
        assert not KeyLock(store, KEY).acquire()
    lease.release()


def test_one_scheduler_renews_many_leases_and_drops_ended_ones(store: StateStore) -> None:
    """Leases of concurrent runs are all renewed; a run that ended is renewed no more."""
    leases = [KeyLock(store, f"{KEY}{n}", ttl=0.6, renew_every=0.1) for n in range(12)]
    for lease in leases:
        assert lease.acquire()
        RENEWALS.schedule(lease)
    ended = leases.pop()
    ended.forget()  # the run ended, its lease left to expire (as after a lost release)
    time.sleep(1.3)  # twice the TTL
    assert all(lease.valid() for lease in leases)
    for lease in leases:
        stored = store.get(lease.key).lease
        assert stored is not None
        assert stored.expires > time.time()
        lease.release()
    stored = store.get(ended.key).lease
    assert stored is not None
    assert stored.expires < time.time()
    assert KeyLock(store, ended.key).acquire()


def test_a_run_that_lost_its_lease_does_not_write(store: StateStore, sync_nats: SyncNats) -> None:
    mappings = MappingStore(sync_nats, "v1-mappings")
    lease = KeyLock(store, KEY, ttl=0.4, renew_every=60)  # renewal never comes in time
    assert lease.acquire()
    with lease:
        mappings.put("project.sfid.before", "uid-1")  # held: allowed
        time.sleep(0.5)
        with pytest.raises(LeaseLost):
            check_write_allowed()
        with pytest.raises(LeaseLost):
            mappings.put("project.sfid.after", "uid-2")
    assert mappings.get("project.sfid.before") == "uid-1"
    assert mappings.get("project.sfid.after") is None
    check_write_allowed()  # outside a run: nothing to check


HOLDER = """
import sys, time
from sync_core.nats_client import SyncNats
from tasks.stores.leases import KeyLock
from tasks.stores.sync_state import StateStore
lease = KeyLock(StateStore(SyncNats(sys.argv[1], "holder"), "v1-sync-state"), sys.argv[2])
assert lease.acquire()
with lease:
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_sigkilled_worker_blocks_its_key_for_seconds_only(
    store: StateStore, sync_nats: SyncNats, nats_server: object
) -> None:
    import signal
    import subprocess
    import sys

    from sandbox.servers import NatsServer, child_env

    assert isinstance(nats_server, NatsServer)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, nats_server.url, KEY],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        time.sleep(LEASE_TTL_SECONDS)  # alive and renewing: the key stays taken
        assert not KeyLock(store, KEY).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        killed = time.monotonic()
        deadline = killed + LEASE_TTL_SECONDS + 5
        while not KeyLock(store, KEY).acquire():
            assert time.monotonic() < deadline, "the key stayed blocked after the kill"
            time.sleep(0.1)
        assert time.monotonic() - killed <= LEASE_TTL_SECONDS + 1
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(5)
        if holder.stdout is not None:
            holder.stdout.close()


def test_acquire_reads_the_entry_in_the_same_round_trip_and_can_decline(
    store: StateStore, sync_nats: SyncNats
) -> None:
    bucket = "v1-objects"
    revision = sync_nats.kv_put(bucket, KEY, b'{"sfid": "x"}')
    declined = KeyLock(store, KEY)
    assert not declined.acquire(read=bucket, wanted=lambda state, entry: False)
    assert declined.entry.revision == revision
    assert not declined.refused
    assert not declined.held
    assert store.get(KEY).lease is None  # declining wrote nothing

    lease = KeyLock(store, KEY)
    assert lease.acquire(read=bucket, wanted=lambda state, entry: entry is not None)
    assert lease.entry.revision == revision
    assert bytes(lease.entry.value) == b'{"sfid": "x"}'
    other = KeyLock(store, KEY)
    assert not other.acquire(read=bucket)
    assert other.refused
    assert other.entry.revision == revision

    absent = KeyLock(store, KEY + "X")
    assert absent.acquire(read=bucket)
    assert absent.entry is None


def test_parked_children_lookup_sees_only_its_own_parent(store: StateStore) -> None:
    from sync_core.sync_state import ParkedChild

    parent, other_parent = "project.sfid.a0941000002wBz9AAE", "project.sfid.a0941000002wBz9AAX"
    assert store.parked_children(parent) == []
    child = ParkedChild("salesforce-project__c.a0941000002wBzAAAU", 7, 1.0)
    store.add_parked(other_parent, child)
    # An entry under another parent (even one whose key extends this one's) is not ours.
    assert store.parked_children(parent) == []
    store.add_parked(parent, child)
    assert store.parked_children(parent) == [child]
    store.remove_parked(parent, child.key)
    assert store.parked_children(parent) == []
    assert store.parked_children(other_parent) == [child]


def test_a_finish_on_the_leases_known_revision_skips_the_read_and_survives_a_stale_one(
    store: StateStore,
) -> None:
    lease = KeyLock(store, KEY)
    assert lease.acquire()
    known = lease.known()
    assert known is not None
    assert lease.renew()  # the stored state moved on: the known revision is stale now
    before, after, parked = store.finish(
        KEY, 5, "updated", 1.0, "uid", lease.token, known=known, epoch=1
    )
    assert before.lease is not None
    assert after.lease is None
    assert after.synced(5)
    assert not parked
    assert store.get(KEY).synced(5)


def test_a_forced_run_of_a_settled_revision_that_parks_drops_its_lease(store: StateStore) -> None:
    """No pending run is recorded (the revision is settled), and the key is free at once."""
    store.finish(KEY, 5, "created", 1.0, "uid", None, epoch=1)
    lease = KeyLock(store, KEY)
    assert lease.acquire()
    parked = PendingRun(RunState.PARKED, 5, 2.0, parent_key="project.sfid.parent")
    after = store.set_pending(KEY, parked, lease.token, epoch=1)
    assert (after.lease, after.pending, after.revision) == (None, None, 5)
    assert KeyLock(store, KEY).acquire()


def test_a_pending_run_of_a_new_bucket_life_replaces_a_higher_settled_revision(
    store: StateStore,
) -> None:
    store.finish(KEY, 500, "created", 1.0, "uid", None, epoch=1)
    retry = PendingRun(RunState.RETRY, 3, 2.0, due=3.0)
    after = store.set_pending(KEY, retry, None, epoch=2)
    assert (after.epoch, after.revision, after.pending, after.uid) == (2, -1, retry, "uid")
