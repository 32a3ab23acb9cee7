"""One snapshot per view (and per modal) of the console on a synthetic fleet.

The fleet, the queue, the clock and the log lines are fixed, so a change in a snapshot is a
change in what the operator sees. Update with `pytest tests/tui --snapshot-update` and
review the SVGs in tests/tui/__snapshots__/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from textual.pilot import Pilot

from runyard.core.fleet.telemetry import GpuProcess
from runyard.core.gpu_processes import GpuProcessOwner, attribute_processes
from runyard.core.log_follow import LogChunk
from runyard.core.metrics import parse_line
from runyard.core.models import Run, Worker
from runyard.core.workspace import Workspace
from runyard.tui.app import RunyardApp
from runyard.tui.views.logs import LogsView

from .harness import settle, start, synthetic_console

SIZE = (160, 42)
Snap = Callable[..., bool]


def log_lines(count: int) -> list[str]:
    lines = []
    for step in range(1, count + 1):
        train = 2.3 * 0.97**step + 0.05
        lines.append(
            f"step {step}/400 | train_loss={train:.4f} val_loss={train * 1.08 + 0.01:.4f} lr=3e-4"
        )
    return lines


def chunk(lines: Sequence[str]) -> LogChunk:
    metrics = [(i, found) for i, line in enumerate(lines) if (found := parse_line(line))]
    return LogChunk(lines=list(lines), first_line_number=0, metrics=metrics, size=len(lines) * 60)


def fixed_owners(app: RunyardApp) -> None:
    """GPU processes attributed by pid alone: no `ps` of this machine in a snapshot."""

    async def owners(
        worker: Worker, processes: Sequence[GpuProcess], runs: Sequence[Run]
    ) -> list[GpuProcessOwner]:
        on_worker = [r for r in runs if r.worker == worker.worker_id]
        return attribute_processes(processes, {}, on_worker)

    app.services.gpu_owners = owners  # type: ignore[method-assign]


def prepared(
    workspace: Workspace, *extra: Callable[[Pilot[Any], RunyardApp], Awaitable[None]]
) -> tuple[RunyardApp, Callable[[Pilot[Any]], Awaitable[None]]]:
    app = synthetic_console(workspace)
    fixed_owners(app)

    async def run_before(pilot: Pilot[Any]) -> None:
        await start(pilot)
        for _ in range(11):  # a dozen probes: sparklines and charts have history
            app.controller.refresh_fleet()
            await settle(pilot)
        app.controller.patrol()
        await settle(pilot)
        for step in extra:
            await step(pilot, app)
        await settle(pilot)

    return app, run_before


def test_fleet_view(snap_compare: Snap, workspace: Workspace) -> None:
    app, before = prepared(workspace)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_runs_view(snap_compare: Snap, workspace: Workspace) -> None:
    app, before = prepared(workspace)
    assert snap_compare(app, press=["2"], terminal_size=SIZE, run_before=before)


def test_logs_view(snap_compare: Snap, workspace: Workspace) -> None:
    async def follow_two(pilot: Pilot[Any], app: RunyardApp) -> None:
        app.action_view("logs")
        logs = app.views["logs"]
        assert isinstance(logs, LogsView)
        runs = [r for r in app.state.runs if r.is_active]
        await logs.open_panes(runs)
        for count, run in zip((240, 180), runs, strict=True):
            logs.add_batch(run.id, chunk(log_lines(count)))
        logs.draw(everything=True)  # every pane, as on becoming visible
        logs.focus_main()

    app, before = prepared(workspace, follow_two)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_gpu_view(snap_compare: Snap, workspace: Workspace) -> None:
    app, before = prepared(workspace)
    assert snap_compare(app, press=["down", "down", "enter"], terminal_size=SIZE, run_before=before)


def test_alerts_view(snap_compare: Snap, workspace: Workspace) -> None:
    app, before = prepared(workspace)
    assert snap_compare(app, press=["5"], terminal_size=SIZE, run_before=before)


def test_teardown_modal_refusing(snap_compare: Snap, workspace: Workspace) -> None:
    # sim-002 ran flaky-4090, which failed and was never pulled: the gate refuses.
    app, before = prepared(workspace)
    assert snap_compare(
        app, press=["down", "down", "down", "t"], terminal_size=SIZE, run_before=before
    )


def test_help(snap_compare: Snap, workspace: Workspace) -> None:
    app, before = prepared(workspace)
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE, run_before=before)


@pytest.mark.parametrize("size", [(100, 30)])
def test_fleet_view_in_a_narrow_tmux_pane(
    snap_compare: Snap, workspace: Workspace, size: tuple[int, int]
) -> None:
    app, before = prepared(workspace)
    assert snap_compare(app, terminal_size=size, run_before=before)


def test_vast_view(snap_compare: Snap, workspace: Workspace) -> None:
    """Fixed instances (one UNTRACKED), offers with a reference job, watcher and spend."""
    from runyard.core.providers.base import Endpoint, InstanceState, Offer, ProviderInstance
    from runyard.core.providers.vast.ledger import CostReport
    from runyard.core.providers.vast.offers import ReferenceJob, rank_offers
    from runyard.core.providers.vast.reconcile import InventoryRow
    from runyard.core.providers.vast.watcher import WatcherState
    from runyard.tui.views.vast import VastView

    def box(instance_id: int, gpu: str, state: InstanceState, dph: float) -> ProviderInstance:
        return ProviderInstance(
            instance_id, state, state.value, Endpoint("ssh4.vast.ai", 20000 + instance_id % 1000),
            dph, 0.01, gpu, 1, 10000 + instance_id % 100, "", 1_748_770_000.0,
        )  # fmt: skip

    def offer(offer_id: int, gpu: str, dph: float, dlperf: float) -> Offer:
        return Offer(offer_id, 10000 + offer_id % 100, gpu, 1, dph, dlperf, 0.99, "DE", False)

    async def fill(pilot: Pilot[Any], app: RunyardApp) -> None:
        app.controller.vast_refresh = lambda *args, **kwargs: None  # type: ignore[method-assign]
        app.action_view("vast")
        view = app.views["vast"]
        assert isinstance(view, VastView)
        offers = rank_offers(
            [
                offer(5000001, "RTX 3060", 0.08, 14.2),
                offer(5000003, "RTX A4000", 0.10, 21.0),
                offer(5000008, "RTX 4090", 0.35, 60.5),
            ],
            ReferenceJob(10.0, 20.0),
        )
        rows = [
            InventoryRow(box(7001, "RTX 3060", InstanceState.RUNNING, 0.08), "vast-3060"),
            InventoryRow(box(7002, "RTX 4090", InstanceState.RUNNING, 0.35), None),
        ]
        view.query_text = "ref=10@20"
        view.set_data(rows, offers, CostReport(now=1_748_779_200.0), None, None)
        view.set_watcher(WatcherState(polls=3, last_error="HTTP 503 from the Vast API"))

    app, before = prepared(workspace, fill)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)
