"""The cost ledger: running at $/hour, stopped at the disk's rate, per UTC day and project."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runyard.core.models import Run, RunStatus, SSHSettings, Worker
from runyard.core.providers.base import InstanceState, ProviderInstance
from runyard.core.providers.vast.ledger import (
    IDLE,
    STOPPED,
    Observation,
    changes,
    compute_costs,
    cost_report,
    latest,
    observe,
    read_ledger,
    record_gone,
)
from runyard.core.store.workspace_store import WorkspaceStore

H = 3600.0
DAY0 = datetime(2026, 5, 30, 22, 0, tzinfo=UTC).timestamp()  # 22:00 UTC


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def box(state: InstanceState, started: float | None = None, dph: float = 1.0) -> ProviderInstance:
    return ProviderInstance(7, state, state.value, None, dph, 0.1, "RTX 4090", 1, 3, "", started)


WORKER = Worker("w", kind="ssh", ssh=SSHSettings("h"), instance_id=7, platform="vast")


def test_first_sighting_backfills_from_start_date_then_only_changes() -> None:
    first = changes({}, [box(InstanceState.RUNNING, started=DAY0)], [WORKER], DAY0 + H)
    assert [(o.t, o.state, o.worker) for o in first] == [(DAY0, "running", "w")]
    same = changes(
        latest(first), [box(InstanceState.RUNNING, started=DAY0)], [WORKER], DAY0 + 2 * H
    )
    assert same == []
    stopped = changes(
        latest(first), [box(InstanceState.STOPPED, started=DAY0)], [WORKER], DAY0 + 3 * H
    )
    assert [o.state for o in stopped] == ["stopped"]
    gone = changes(latest(first + stopped), [], [WORKER], DAY0 + 4 * H)
    assert [o.state for o in gone] == ["gone"]


def test_costs_running_then_stopped_across_midnight() -> None:
    obs = [
        Observation(DAY0, 7, "running", 1.0, 0.1, "w", "RTX 4090"),  # 22:00 -> 01:00 running
        Observation(DAY0 + 3 * H, 7, "stopped", 1.0, 0.1, "w", "RTX 4090"),  # then 5 h stopped
        Observation(DAY0 + 8 * H, 7, "gone", 0.0, 0.0, "w", "RTX 4090"),
    ]
    report = compute_costs(obs, [], [WORKER], now=DAY0 + 20 * H)
    (item,) = report.instances
    assert item.hours_running == pytest.approx(3) and item.hours_stopped == pytest.approx(5)
    assert item.cost == pytest.approx(3 * 1.0 + 5 * 0.1)
    assert report.per_day == pytest.approx({"2026-05-30": 2.0, "2026-05-31": 1.5})
    assert report.per_project == pytest.approx({IDLE: 3.0, STOPPED: 0.5})
    assert report.burn_dph == 0.0  # gone


def test_running_time_is_split_between_the_projects_of_the_runs() -> None:
    obs = [Observation(DAY0, 7, "running", 2.0, 0.1, "w", "RTX 4090")]
    runs = [
        Run(
            "r1",
            "a",
            "x",
            project="alpha",
            status=RunStatus.DONE,
            worker="w",
            started_at=iso(DAY0),
            ended_at=iso(DAY0 + 2 * H),
        ),
        Run(
            "r2",
            "b",
            "x",
            project="beta",
            status=RunStatus.RUNNING,
            worker="w",
            started_at=iso(DAY0 + H),
        ),
    ]
    report = compute_costs(obs, runs, [WORKER], now=DAY0 + 4 * H)
    # 0-1 h alpha alone, 1-2 h alpha+beta, 2-4 h beta alone: $2/h.
    assert report.per_project == pytest.approx({"alpha": 3.0, "beta": 5.0})
    assert report.total == pytest.approx(8.0) and report.burn_dph == 2.0


def test_observe_and_record_gone_write_the_ledger(store: WorkspaceStore) -> None:
    store.workspace.workers_path.write_text(
        "- worker_id: w\n  instance_id: 7\n  kind: ssh\n  platform: vast\n  ssh: {host: h}\n"
    )
    observe(store, [box(InstanceState.RUNNING, started=DAY0)], now=DAY0 + H)
    observe(store, [box(InstanceState.RUNNING, started=DAY0)], now=DAY0 + 2 * H)
    record_gone(store, 7, now=DAY0 + 2 * H)
    record_gone(store, 7, now=DAY0 + 3 * H)  # already gone: nothing more
    assert [o.state for o in read_ledger(store.workspace.state_dir / "vast-ledger.jsonl")] == [
        "running",
        "gone",
    ]
    report = cost_report(store, now=DAY0 + 10 * H)
    assert report.total == pytest.approx(2.0) and report.instances[0].worker == "w"
