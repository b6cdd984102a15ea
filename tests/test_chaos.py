"""The chaos proof, short enough for the suite; ``make chaos`` runs the long one.

Real processes (2 bridges, 2 workers, nats-server, valkey with AOF everysec),
V2 fakes answering 10% 503, 5% 429 and dropping 1% of connections (half after
doing the work); workers SIGKILLed every few seconds, a bridge SIGKILLed,
valkey restarted gracefully and with SIGKILL, nats-server restarted, while
every key is written three times. Then every key must show its last revision
in V2, with no duplicate, no stray dead letter and nothing pending; and acked
changes lost with an empty broker must reach V2 with no operator action.

With ``SYNC_V2_TO_V1`` on, a person edits committees from V1 and their
members in V2 meanwhile (``tests.chaos_reverse``), V1 answering 503, 429 and
dropping answers: every edit must be in V1, once, with no V1 duplicate and
no write for an echo either way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos_harness import ChaosConfig, run_chaos
from tests.chaos_reverse import ReverseConfig

pytestmark = pytest.mark.slow

SHORT = ChaosConfig(
    seed=12,
    keys=90,
    writes=3,
    duration=40.0,
    settle_timeout=75.0,
    empty_broker_keys=10,
    heal_timeout=45.0,
    worker_kill_every=6.0,
    # Short reconciler timing so the empty-broker heal fits the suite's budget.
    reconcile_interval=5.0,
    reconcile_grace=5.0,
    bridge_kills=(0.25, 0.7),
    reverse=ReverseConfig(
        committees=4,
        committee_updates=2,
        members_per_committee=2,
        member_updates=1,
        window=(0.1, 0.9),
        settle_timeout=60.0,
    ),
)


@pytest.mark.timeout(420)
def test_nothing_is_lost_under_fire(tmp_path: Path) -> None:
    lines: list[str] = []
    figures = run_chaos(SHORT, tmp_path, say=lines.append)
    print(figures.line())  # shown with -s: the figures of the short run
    report = figures.line() + "\n" + "\n".join(lines) + f"\nlost: {figures.lost_keys[:10]}"
    assert figures.lost == 0, report
    assert figures.duplicates == 0, report
    assert figures.stray_dead_letters == 0, report
    assert figures.pending == 0, report
    assert figures.crashes == 0, report
    assert figures.healed == SHORT.empty_broker_keys, report
    reverse = figures.reverse
    assert reverse is not None
    print(reverse.line())
    report += "\n" + reverse.line() + f"\nnot in V1: {reverse.unconverged[:10]}"
    assert reverse.edits > 0, report
    assert reverse.converged == reverse.objects, report
    assert reverse.duplicates == 0, report
    # One V1 write per V2 edit: none for an echo of the forward path, none lost.
    assert reverse.v1_effective == reverse.edits, report
    assert reverse.v2_echo_writes == 0, report
    assert reverse.events_pending == 0, report
