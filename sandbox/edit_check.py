"""Check, object by object, that the V2 edits of ``make run`` reached V1 once, echoes skipped.

``check_edits(applied, world)`` takes the edits as ``sandbox.v2_edits.apply_edits``
made them and what the local stack holds, and returns one ``EditResult`` per
edit plus the problems of the whole run. Per edit:

- the V1 row in ``v1-objects`` (as the V1 API fake wrote it, with
  ``lastmodifiedbyid = {AUTH0_CLIENT_ID}@clients``) holds the edited values;
  the removed member's row is soft-deleted;
- a created committee or member is exactly one live V1 row, the one mapped;
- the forward path skipped that row when it came back (its sync state records
  ``skipped`` for the row's latest revision), and made no V2 write for it.

For the whole run: the V1 API fake answered exactly the edits' writes (one
each, after the edit phase began): a V1 write for a forward-created object
would be a forward echo that was not skipped. And no V2 write but the
person's was made after the edit phase began (an echo of a V1 write that
was not skipped). An empty list of problems means every edit arrived as it should.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sandbox.traffic import RecordedRequest
from sandbox.v2_edits import PERSON, Action, AppliedEdit, sfid_of, v1_key_prefix
from sync_core.nats_client import SyncNats
from tasks.errors import InvalidRecord
from tasks.mapping.codec import decode_value
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore
from tasks.stores.v1_rows import find_rows

V1_API_PREFIX = "/project-service/v2/projects/"
V2_PREFIXES = ("/projects", "/committees")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CLIENT_SUFFIX = "@clients"
SKIPPED = "skipped"
# The V1 API fake's verbs, as the summary names them.
V1_WRITE_NAMES = {"POST": "created", "PATCH": "updated", "DELETE": "deleted"}


@dataclass(frozen=True)
class StackView:
    """What the check reads: the stack's NATS, the sandbox's request log, where edits began."""

    nats: SyncNats
    objects_bucket: str
    state_bucket: str
    mappings: MappingStore
    requests: list[RecordedRequest]
    edits_began: int  # the number of requests recorded before the first edit
    auth0_client_id: str


@dataclass
class EditResult:
    """One edit as V1 has it."""

    label: str
    v1_key: str | None = None
    v1_row: dict[str, Any] | None = None
    # Live V1 rows of a created object (exactly one wanted); None for other edits.
    rows: int | None = None
    echo_skipped: bool = False
    call: tuple[str, str] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class EditCheck:
    """Every edit's result and every problem (the edits' and the run's)."""

    results: list[EditResult]
    problems: list[str]
    v1_writes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form ``dev --dump-state`` writes."""
        return {
            "edits": [vars(result) for result in self.results],
            "problems": self.problems,
            "v1_writes": self.v1_writes,
        }


def v1_writes(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    """The writes the V1 API fake answered."""
    return [r for r in requests if r.path.startswith(V1_API_PREFIX) and r.method in WRITE_METHODS]


def v1_write_counts(requests: Iterable[RecordedRequest]) -> dict[str, int]:
    """Successful V1 writes by what they did: ``created``, ``updated``, ``deleted``."""
    counts = Counter(
        V1_WRITE_NAMES.get(r.method, r.method) for r in v1_writes(requests) if r.status < 300
    )
    return {name: counts.get(name, 0) for name in V1_WRITE_NAMES.values()}


def check_edits(applied: list[AppliedEdit], view: StackView) -> EditCheck:
    """Every edit's V1 row and echo, then the V1 and V2 request logs (see the module)."""
    states = StateStore(view.nats, view.state_bucket)
    results = [_check_one(item, view, states) for item in applied]
    problems = [problem for result in results for problem in result.problems]
    if not problems:
        problems += _v1_call_problems(results, view)
        problems += _v2_echo_problems(view)
    return EditCheck(results, problems, v1_write_counts(view.requests))


def _check_one(item: AppliedEdit, view: StackView, states: StateStore) -> EditResult:
    edit = item.edit
    result = EditResult(edit.label)
    sfid = _v1_sfid(item, view.mappings)
    if sfid is None:
        result.problems.append(f"{edit.label}: not created in V1 yet (no V1 id mapped)")
        return result
    key = f"{v1_key_prefix(edit.action)}.{sfid}"
    result.v1_key = key
    entry = view.nats.kv_get(view.objects_bucket, key)
    row = _decoded(entry.value if entry is not None else None)
    result.v1_row = row
    if entry is None or row is None:
        result.problems.append(f"{edit.label}: V1 row {key} missing")
        return result
    for column, want in edit.v1_columns.items():
        if row.get(column) != want:
            result.problems.append(
                f"{edit.label}: V1 row {key} {column} is {row.get(column)!r}, expected {want!r}"
            )
    writer = view.auth0_client_id + CLIENT_SUFFIX
    if row.get("lastmodifiedbyid") != writer:
        result.problems.append(
            f"{edit.label}: V1 row {key} last written by {row.get('lastmodifiedbyid')!r}, "
            f"not by the V1 API for {writer}"
        )
    if edit.action in (Action.CREATE_COMMITTEE, Action.ADD_MEMBER):
        found = _rows_of_created(item, row, view)
        result.rows = len(found)
        if found != [key]:
            result.problems.append(
                f"{edit.label}: {len(found)} live V1 rows ({', '.join(found) or 'none'}), "
                f"expected exactly {key}"
            )
    state = states.get(key)
    result.echo_skipped = state.revision >= entry.revision and state.outcome == SKIPPED
    if not result.echo_skipped:
        result.problems.append(
            f"{edit.label}: the forward path has not skipped V1 row {key} revision "
            f"{entry.revision} as an echo (its state: {state.outcome} at {state.revision})"
        )
    result.call = _expected_call(item, row, sfid)
    return result


def _v1_sfid(item: AppliedEdit, mappings: MappingStore) -> str | None:
    edit = item.edit
    if edit.action is Action.CREATE_COMMITTEE:
        return mappings.committee_sfid(item.uid)
    if edit.action is Action.ADD_MEMBER:
        return mappings.member_sfid(item.uid)
    return sfid_of(edit.target)


def _decoded(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        return decode_value(bytes(value))
    except InvalidRecord:
        return None


def _rows_of_created(item: AppliedEdit, row: dict[str, Any], view: StackView) -> list[str]:
    """The live V1 rows that are the created object (its V1 twin found by name or e-mail)."""
    edit = item.edit
    wanted: Callable[[dict[str, Any]], bool]
    if edit.action is Action.CREATE_COMMITTEE:
        name = edit.v2_fields["name"]

        def wanted(other: dict[str, Any]) -> bool:
            return bool(
                other.get("project_name__c") == edit.target and other.get("mailing_list__c") == name
            )

    else:
        email = str(edit.v2_fields["email"]).strip().lower()
        committee = row.get("collaboration_name__c")

        def wanted(other: dict[str, Any]) -> bool:
            return bool(
                other.get("collaboration_name__c") == committee
                and str(other.get("contactemail__c") or "").strip().lower() == email
            )

    prefix = v1_key_prefix(edit.action) + "."
    return sorted(key for key, _ in find_rows(view.nats, view.objects_bucket, prefix, wanted))


def _expected_call(item: AppliedEdit, row: dict[str, Any], sfid: str) -> tuple[str, str]:
    """The one V1 API call the edit must have caused: method and path."""
    action = item.edit.action
    project = row.get("project_name__c")
    committees = f"{V1_API_PREFIX}{project}/committees"
    if action is Action.CREATE_COMMITTEE:
        return "POST", committees
    if action is Action.UPDATE_COMMITTEE:
        return "PATCH", f"{committees}/{sfid}"
    members = f"{committees}/{row.get('collaboration_name__c')}/members"
    if action is Action.ADD_MEMBER:
        return "POST", members
    method = "PATCH" if action is Action.UPDATE_MEMBER else "DELETE"
    return method, f"{members}/{row.get('contact_name__c')}"


def _v1_call_problems(results: list[EditResult], view: StackView) -> list[str]:
    """The V1 API fake must have answered exactly one write per edit, all after they began."""
    problems: list[str] = []
    writes = v1_writes(view.requests)
    before = v1_writes(view.requests[: view.edits_began])
    for request in before:
        problems.append(
            f"V1 API: {request.method} {request.path} before the V2 edits (a forward echo "
            "that was not skipped)"
        )
    after = writes[len(before) :]
    for request in after:
        if request.status >= 300:
            problems.append(f"V1 API: {request.method} {request.path} answered {request.status}")
    made = Counter((r.method, r.path) for r in after if r.status < 300)
    wanted = Counter(result.call for result in results if result.call is not None)
    for result in results:
        if result.call is not None and made[result.call] < wanted[result.call]:
            problems.append(f"{result.label}: no V1 {result.call[0]} {result.call[1]}")
    for call, count in (made - wanted).items():
        problems.append(
            f"V1 API: {count} more {call[0]} {call[1]} than the edits made (a duplicate, or "
            "an echo that was not skipped)"
        )
    return problems


def _v2_echo_problems(view: StackView) -> list[str]:
    """No V2 write after the edits began but the person's own."""
    problems = []
    for request in view.requests[view.edits_began :]:
        if request.method not in WRITE_METHODS or not request.path.startswith(V2_PREFIXES):
            continue
        principal = (request.claims or {}).get("principal")
        if principal != PERSON.principal:
            problems.append(
                f"V2: {request.method} {request.path} by {principal} after the edits (an echo "
                "of a V1 write that was not skipped)"
            )
    return problems
