"""Building consoles for tests and waiting on their workers (never on the clock)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textual.pilot import Pilot

from fakes.sandbox_fleet import SandboxFleet
from runyard.core.models import PullRecord, Run, RunStatus, Worker
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace
from runyard.sim.synthetic import StaticAlerts, SyntheticTelemetry, synthetic_workers
from runyard.tui.app import RunyardApp
from runyard.tui.services import ConsoleServices, TelemetrySource
from runyard.tui.state import AlertLike

# Every test console sees the same "now", so ages and snapshots never drift.
FIXED_NOW = 1_748_779_200.0  # 2025-06-01T12:00:00Z
LABEL = "~/ml/demo-workspace"


@dataclass(frozen=True)
class FakeAlert:
    """A patrol finding (the shape of core.patrol.Alert)."""

    id: str
    kind: str
    severity: str
    worker: str
    message: str
    fix: str
    run_id: str | None = None
    first_seen: str = "2025-06-01T11:42:00Z"


def console(
    workspace: Workspace,
    *,
    telemetry: TelemetrySource | None = None,
    alerts: Sequence[AlertLike] = (),
    real_clock: bool = False,
) -> RunyardApp:
    """A console with timers off (tests drive every tick) on the sandbox fleet."""
    store = WorkspaceStore(workspace)
    services = ConsoleServices(
        workspace,
        fleet=SandboxFleet(workspace, store.settings()),
        telemetry=telemetry,
        alerts=StaticAlerts(alerts),
    )
    clock = time.time if real_clock else (lambda: FIXED_NOW)
    app = RunyardApp(services, timers=False, clock=clock, workspace_label=LABEL)
    app.controller.log_poll_seconds = 0.05
    runs_view = app.views["runs"]
    runs_view.clock = clock  # type: ignore[attr-defined]
    return app


def _background(app: RunyardApp) -> list[object]:
    return [
        w
        for w in app.workers
        if w.is_running
        and not (w.group or "").startswith("follow:")
        and w.group != "vast-watch"  # the watcher polls until told to stop
    ]


async def settle(pilot: Pilot[int]) -> None:
    """Wait until every worker but the log followers has finished and its messages landed."""
    app = pilot.app
    assert isinstance(app, RunyardApp)
    for _ in range(100):
        pending = _background(app)
        if not pending:
            await pilot.pause()
            if not _background(app):
                return
        await app.workers.wait_for_complete(pending)  # type: ignore[arg-type]
        await pilot.pause()
    raise AssertionError("the console's workers never settled")


async def until(
    pilot: Pilot[int],
    predicate: Callable[[], bool],
    step: Callable[[], None] | None = None,
    timeout: float = 60.0,
) -> None:
    """Repeat `step` (a refresh) and settle until `predicate` holds; every round waits on
    real work (a probe, a check, a log read), so there is no sleep to tune."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        if step is not None:
            step()
        await settle(pilot)
        if step is None:
            await pilot.pause(0)


async def start(pilot: Pilot[int], probe: bool = True) -> None:
    """First load and (optionally) one fleet probe, as the timers would do."""
    app = pilot.app
    assert isinstance(app, RunyardApp)
    await settle(pilot)
    if probe:
        app.controller.refresh_fleet()
        await settle(pilot)


def synthetic_fleet(store: WorkspaceStore, workers: Sequence[Worker]) -> None:
    for worker in workers:
        add_worker(store, worker)


def fixed_runs() -> list[Run]:
    """A queue in every state, with fixed ids and times (for snapshots)."""

    def run(run_id: str, name: str, status: RunStatus, **fields: object) -> Run:
        base = Run(
            id=run_id,
            name=name,
            command=f"python3 train.py --name {name}",
            project=str(fields.pop("project", "demo")),
            status=status,
            created_at="2025-06-01T09:00:00Z",
        )
        for key, value in fields.items():
            setattr(base, key, value)
        return base

    started = "2025-06-01T11:15:00Z"
    return [
        run("r1a2b3c", "sweep-lr0.01", RunStatus.RUNNING, worker="sim-001", attempts=1,
            started_at=started, pid=4020, run_dir="/nonexistent/r1a2b3c/1",
            metrics={"epoch": 14, "train_loss": 0.412, "val_loss": 0.437}),
        run("r2b3c4d", "sweep-lr0.03", RunStatus.RUNNING, worker="sim-002", attempts=1,
            started_at=started, pid=4031, run_dir="/nonexistent/r2b3c4d/1",
            metrics={"epoch": 12, "train_loss": 0.398, "val_loss": 0.455}),
        run("r3c4d5e", "ablation-wd", RunStatus.PENDING, priority=5, project="ablation"),
        run("r4d5e6f", "long-h100", RunStatus.PENDING, priority=1, pinned_worker="sim-004"),
        run("r5e6f7a", "baseline", RunStatus.DONE, worker="sim-001", attempts=1, exit_code=0,
            started_at="2025-06-01T09:05:00Z", ended_at="2025-06-01T09:40:00Z",
            run_dir="/nonexistent/r5e6f7a/1",
            metrics={"epoch": 8, "train_loss": 0.370, "val_loss": 0.365, "val_acc": 0.891},
            pull=PullRecord(at="2025-06-01T09:45:00Z", files=4, bytes=20480, verified=True)),
        run("r6f7a8b", "flaky-4090", RunStatus.FAILED, worker="sim-002", attempts=2, exit_code=1,
            started_at="2025-06-01T10:00:00Z", ended_at="2025-06-01T10:20:00Z",
            run_dir="/nonexistent/r6f7a8b/2", error=None,
            metrics={"epoch": 3, "train_loss": 0.499}),
        run("r7a8b9c", "oom-bs512", RunStatus.LOST, worker="sim-003", attempts=1,
            started_at="2025-06-01T10:30:00Z", ended_at="2025-06-01T10:50:00Z",
            run_dir="/nonexistent/r7a8b9c/1", error="process gone without an exit code"),
        run("r8b9c0d", "typo-run", RunStatus.CANCELLED, ended_at="2025-06-01T08:00:00Z"),
    ]  # fmt: skip


def write_runs(store: WorkspaceStore, runs: Sequence[Run]) -> None:
    with store.queue_transaction() as queue:
        queue.extend(runs)


SAMPLE_ALERTS = (
    FakeAlert("zombie_vram:sim-003:gpu1:pid777", "zombie_vram", "warning", "sim-003",
              "pid 777 (python3) holds 6144 MiB on GPU 1 but belongs to no run",
              "kill 777 on sim-003"),
    FakeAlert("disk:sim-005:/root", "disk", "critical", "sim-005",
              "disk /root is 99% full (2.1G free)",
              "free space: rm -rf old checkpoints, or `runyard pull --all` then clean results"),
    FakeAlert("stale_log:sim-002:r2b3c4d", "stale_log", "warning", "sim-002",
              "run sweep-lr0.03 has not written to its log for 42 minutes",
              "runyard logs r2b3c4d -n 50; cancel it if it hangs", run_id="r2b3c4d"),
)  # fmt: skip


def synthetic_console(
    workspace: Workspace, workers: int = 6, alerts: Sequence[AlertLike] = SAMPLE_ALERTS
) -> RunyardApp:
    """The console over `workers` synthetic rented boxes and the fixed queue."""
    store = WorkspaceStore(workspace)
    synthetic_fleet(store, synthetic_workers(workers))
    write_runs(store, fixed_runs())
    return console(workspace, telemetry=SyntheticTelemetry(unreachable=("sim-004",)), alerts=alerts)
