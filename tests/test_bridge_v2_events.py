"""What one message of the V2 events stream means to the bridge (``bridge.v2_events``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

from bridge.changes import KvChange, Skip
from bridge.v2_events import UNREADABLE_ID, V2EventReader, event_stream_spec
from sync_core.v2_events import V2EventCapture

CAPTURE = V2EventCapture(
    stream="committee_events",
    subjects=("lfx.committee.>", "lfx.committee_member.>"),
    max_age=3600.0,
    consumer="v2-events",
)


@dataclass
class FakeMsg:
    subject: str
    data: bytes
    sequence: int = 7

    @property
    def metadata(self) -> SimpleNamespace:
        return SimpleNamespace(sequence=SimpleNamespace(stream=self.sequence))


def test_an_event_becomes_its_object_key_sequence_and_action() -> None:
    msg = FakeMsg("lfx.committee_member.updated", b'{"object_id": "m-1"}', 42)
    assert V2EventReader()(msg) == KvChange("v2.committee_member.m-1", 42, "updated")


def test_an_event_without_a_usable_id_is_still_enqueued_under_a_key_that_says_so() -> None:
    for data in (b"not json", b"[]", b'{"object_id": ""}', b'{"object_id": "a b*"}'):
        change = V2EventReader()(FakeMsg("lfx.committee.created", data))
        assert change == KvChange(f"v2.committee.{UNREADABLE_ID}", 7, "created"), data


def test_foreign_subjects_and_actions_are_skipped() -> None:
    reader = V2EventReader()
    assert isinstance(reader(FakeMsg("lfx.project.created", b"{}")), Skip)
    assert isinstance(reader(FakeMsg("other.committee.created", b"{}")), Skip)
    assert isinstance(reader(FakeMsg("lfx.committee.renamed", b"{}")), Skip)


def test_the_loop_spec_is_the_consumer_the_capture_creates() -> None:
    spec = event_stream_spec(CAPTURE)
    assert spec.stream == "committee_events"
    wanted, got = CAPTURE.consumer_config(), spec.config()
    for field in ("name", "durable_name", "ack_policy", "deliver_policy", "max_deliver"):
        assert getattr(got, field) == getattr(wanted, field), field
    assert (got.ack_wait, got.max_ack_pending) == (wanted.ack_wait, wanted.max_ack_pending)


def test_a_queued_v2_event_task_gives_no_kv_revision() -> None:
    from celery import Celery

    from bridge.messages import TaskMessageEncoder, queued_revision
    from sync_core.broker import V2_EVENT_TASK_NAME

    app = Celery("t", broker="memory://", set_as_current=False)
    kv = TaskMessageEncoder(app, "celery", 0)
    v2 = TaskMessageEncoder(app, "celery", 0, task_name=V2_EVENT_TASK_NAME)
    change = KvChange("v2.committee.c-1", 42, "updated")
    assert queued_revision(kv.encode([change]).tasks[0]) == 42
    assert queued_revision(v2.encode([change]).tasks[0]) is None
    assert json.loads(v2.encode([change]).tasks[0])["headers"]["task"] == V2_EVENT_TASK_NAME
