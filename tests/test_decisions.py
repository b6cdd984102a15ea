"""The pure decisions shared by the task and ``explain``, and the dead-letter failure."""

from __future__ import annotations

import logging
import pickle

import pytest

from sync_core.keys import ObjectType
from tasks.errors import DeadLettered, InvalidRecord, PermanentError, TransientError
from tasks.kinds.projects import PROJECTS
from tasks.kinds.registry import kind_named
from tasks.mapping.merge import FieldChange, field_changes, needs_update
from tasks.run.decisions import read_value, should_retry, skip_for_key


@pytest.mark.parametrize(
    ("object_type", "available", "reason"),
    [
        (None, True, "unknown_prefix"),
        (ObjectType.COMMITTEE_MEMBER, True, None),
        (ObjectType.COMMITTEE_MEMBER, False, "no_committee_service"),
        (ObjectType.COMMITTEE, False, "no_committee_service"),
        (ObjectType.COMMITTEE, True, None),
        (ObjectType.PROJECT, True, None),
    ],
)
def test_skip_for_key(object_type: ObjectType | None, available: bool, reason: str | None) -> None:
    skip = skip_for_key(kind_named(object_type), available)
    assert (skip.reason if skip else None) == reason


SFID = "a0941000002wBz9AAE"
PROJECT = PROJECTS.reference_columns


def test_read_value_skips_empty_values_and_spots_soft_deletes() -> None:
    empty = read_value(b"  \n", PROJECT, SFID)
    assert empty.skip is not None
    assert (empty.skip.reason, empty.skip.log_level) == ("empty_value", logging.INFO)
    assert read_value(
        b'{"sfid": "%s", "isdeleted": true}' % SFID.encode(), PROJECT, SFID
    ).soft_delete
    live = read_value(b'{"sfid": " %s "}' % SFID.encode(), PROJECT, SFID)
    assert (live.record, live.soft_delete, live.skip) == ({"sfid": SFID}, False, None)
    with pytest.raises(InvalidRecord):
        read_value(b"\xff not a record", PROJECT, SFID)


def test_read_value_checks_the_ids_before_a_soft_delete_counts() -> None:
    # A record under key A that says it is B must not delete (or update) B.
    other = b'{"sfid": "a0941000002wBz9BBB", "isdeleted": true}'
    with pytest.raises(InvalidRecord, match="sfid"):
        read_value(other, PROJECT, SFID)


def test_should_retry_only_transient_errors_within_the_budget() -> None:
    transient = TransientError("later", kind="timeout")
    assert should_retry(transient, 0, 3)
    assert not should_retry(transient, 3, 3)
    assert not should_retry(PermanentError("never", kind="v2_validation"), 0, 3)


def test_field_changes_name_each_difference_and_agree_with_needs_update() -> None:
    read_only = frozenset({"uid"})
    current = {"uid": "u1", "name": "Old", "public": True, "stage": "Active", "gone": None}
    desired = {"uid": "u2", "name": "New", "public": 1, "stage": "Active", "extra": "x"}
    assert field_changes(current, desired, read_only) == (
        FieldChange("extra", None, "x"),
        FieldChange("name", "Old", "New"),
        FieldChange("public", True, 1),
    )
    assert needs_update(current, desired, read_only)
    assert field_changes(current, dict(current, uid="other"), read_only) == ()
    assert not needs_update(current, dict(current, uid="other"), read_only)


def test_dead_lettered_is_one_line_and_survives_pickling() -> None:
    error = DeadLettered("v2_validation", "400 Bad Request:\n  slug must\tmatch")
    assert str(error) == "v2_validation: 400 Bad Request: slug must match"
    assert repr(error) == "DeadLettered('v2_validation', '400 Bad Request: slug must match')"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.message) == (error.kind, error.message)


def test_every_dead_lettering_outcome_ends_as_a_failure() -> None:
    from tasks.run.outcomes import Outcome, ends_in_dead_letter

    failing = {o for o in Outcome if ends_in_dead_letter(o)}
    assert failing == {Outcome.DEAD_LETTERED, Outcome.DELETE_REFUSED}


@pytest.mark.parametrize(
    ("tombstoned", "mapped", "enabled", "reason"),
    [
        (True, False, True, "already_deleted"),
        (False, False, True, "not_in_v2"),
        (False, True, False, "deletes_disabled"),
        (False, True, True, None),
    ],
)
def test_delete_skip(tombstoned: bool, mapped: bool, enabled: bool, reason: str | None) -> None:
    from tasks.run.decisions import delete_skip

    skip = delete_skip(tombstoned, mapped, enabled)
    assert (skip.reason if skip else None) == reason
