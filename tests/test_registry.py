"""The registry of object types: every per-type table comes from the registered kinds."""

from __future__ import annotations

import pytest

from operations.undelete import forward_mapping_key
from sync_core.keys import (
    KEY_PREFIXES,
    KeySpec,
    KeySpecConflict,
    ObjectType,
    key_specs,
    parse_key,
    sync_rank,
)
from sync_core.settings import WorkerSettings
from tasks.clients.v2 import V2ServiceSpec
from tasks.kinds.base import ObjectKind
from tasks.kinds.committees import COMMITTEES
from tasks.kinds.members import MEMBERS
from tasks.kinds.projects import PROJECTS
from tasks.kinds.registry import (
    KindConflict,
    kind_for_key,
    kind_named,
    kinds,
    registered,
    service_specs,
)

ID = "a0941000002wBz9AAE"


def test_the_builtin_kinds_in_sync_order_with_their_keys_and_services() -> None:
    assert kinds() == (PROJECTS, COMMITTEES, MEMBERS)
    assert [kind.name for kind in kinds()] == [str(t) for t in ObjectType]
    for kind in kinds():
        assert KEY_PREFIXES[kind.keys.prefix] == kind.name
        assert kind_for_key(f"{kind.keys.prefix}.{ID}") == (kind, ID)
        assert kind_named(kind.name) is kind
    assert [spec.name for spec in service_specs()] == ["project", "committee"]
    for spec in service_specs():
        assert spec.url_setting in WorkerSettings.model_fields, spec


def test_parse_key_answers_the_enum_members_for_the_builtin_types() -> None:
    assert parse_key(f"salesforce-project__c.{ID}")[0] is ObjectType.PROJECT
    assert parse_key(f"platform-community__c.{ID}")[0] is ObjectType.COMMITTEE_MEMBER


def test_every_kind_that_tombstones_can_be_undeleted_members_included() -> None:
    assert forward_mapping_key(f"salesforce-project__c.{ID}") == f"project.sfid.{ID}"
    assert forward_mapping_key(f"platform-collaboration__c.{ID}") == f"committee.sfid.{ID}"
    assert forward_mapping_key(f"platform-community__c.{ID}") == f"committee_member.sfid.{ID}"
    assert forward_mapping_key(f"salesforce-account.{ID}") is None


def test_sync_rank_puts_parents_first_and_unknown_types_last() -> None:
    keys = [f"platform-community__c.{ID}", "other.x", f"salesforce-project__c.{ID}"]
    keys += [f"platform-collaboration__c.{ID}"]
    assert sorted(keys, key=sync_rank) == [keys[2], keys[3], keys[0], keys[1]]


class _Toy(ObjectKind):
    keys = KeySpec("toy", "platform-toy__c", rank=1)
    v2 = V2ServiceSpec("toy", "toys", "lfx-v2-toy-service", "toy_service_url", "no_toy_service")
    sfid_prefix = "toy.sfid."
    uid_prefix = "toy.uid."


def test_a_registered_kind_comes_and_goes_with_its_keys() -> None:
    toy = _Toy()
    with registered(toy):
        assert kind_for_key(f"platform-toy__c.{ID}") == (toy, ID)
        assert toy.keys in key_specs()
        assert forward_mapping_key(f"platform-toy__c.{ID}") == f"toy.sfid.{ID}"
    assert kind_for_key(f"platform-toy__c.{ID}") == (None, ID)
    assert "platform-toy__c" not in KEY_PREFIXES
    assert toy not in kinds()


def test_a_kind_that_clashes_with_a_registered_one_is_refused() -> None:
    same_prefix = _Toy()
    same_prefix.keys = KeySpec("toy", PROJECTS.keys.prefix, rank=0)
    with pytest.raises(KeySpecConflict), registered(same_prefix):
        pass
    same_mappings = _Toy()
    same_mappings.sfid_prefix = PROJECTS.sfid_prefix
    with pytest.raises(KindConflict, match="mapping prefix"), registered(same_mappings):
        pass
    same_name = _Toy()
    same_name.keys = KeySpec("project", "platform-toy__c", rank=0)
    with pytest.raises(KindConflict), registered(same_name):
        pass
    assert kinds() == (PROJECTS, COMMITTEES, MEMBERS)


def test_a_kind_whose_forward_mappings_the_reconciler_cannot_find_is_refused() -> None:
    odd = _Toy()
    odd.sfid_prefix = "toy.by-sfid."
    with pytest.raises(KindConflict, match=r"sfid_prefix must be 'toy\.sfid\.'"), registered(odd):
        pass
    assert kinds() == (PROJECTS, COMMITTEES, MEMBERS)
