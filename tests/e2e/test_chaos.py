"""The fault harness at CI size: each process SIGKILLed once during a stream of deploys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.chaos import TARGETS, Chaos

pytestmark = pytest.mark.stack


def test_every_process_killed_once_loses_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    report = Chaos(tmp_path / "stack", rounds=1, interval=0.2, seed=7).run()
    print(report.summary())
    assert report.kills == dict.fromkeys(TARGETS, 1)
    assert report.deploys_accepted >= 20 and report.rejected == []
    assert report.failed_with_cleanup > 0, "no deploy failed: the cleanup went untested"
    assert report.unsettled == []
    assert report.running + report.failed_with_cleanup == report.deploys_accepted
    assert report.orphans == []
    assert report.failed_but_in_vcenter == [] and report.running_but_not_in_vcenter == []
    assert report.effects_twice == [] and report.capacity_leaks == []
    assert report.events_in_jetstream == report.events_stored
    assert report.projections_equal_rebuild
    assert report.ok


def test_copies_and_nats_nodes_killed_in_turn_lose_nothing(tmp_path: Path) -> None:
    """Two copies of every service and a cluster of three NATS nodes: each copy, each node,
    PostgreSQL, and the active relay, projector and planner are SIGKILLed in turn."""
    chaos = Chaos(tmp_path / "stack", rounds=1, interval=0.3, seed=11, replicas=2,
                  nats_nodes=3)
    report = chaos.run()
    print(report.summary())
    killed = set(report.kills)
    assert {"relay:active", "projector:active", "planner:active", "planner-2", "gateway-2",
            "postgres"} <= killed
    assert sum(name.startswith("nats-server") for name in killed) == 3
    assert all(n == 1 for n in report.kills.values())
    assert report.deploys_accepted >= 20 and report.rejected == []
    assert report.unsettled == [] and report.orphans == []
    assert report.running + report.failed_with_cleanup == report.deploys_accepted
    assert report.failed_but_in_vcenter == [] and report.running_but_not_in_vcenter == []
    assert report.effects_twice == [] and report.capacity_leaks == []
    assert report.events_in_jetstream == report.events_stored
    assert report.projections_equal_rebuild
    assert report.ok
