"""Pilot tests of the Logs view: follow, live metrics chart, pause, search, bounded memory."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from runyard.core.models import RunStatus
from runyard.core.protocol import output_dir_path
from runyard.core.runs import RunSpec, add_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.tui.app import RunyardApp
from runyard.tui.views.logs import LogPane, LogsView
from runyard.tui.widgets.charts import LineChart

from .harness import console, settle, start, synthetic_console, until

SIZE = (160, 45)
# A run that trains for a while: one metrics line per step, then it waits to be released.
TRAINING = (
    'for i in $(seq 1 400); do echo "step $i/400 | loss=$(( 1000 - i )).0e-3 acc=0.$i"; '
    "[ $((i % 20)) = 0 ] && sleep 0.1; done; "
    'while [ ! -e "$RUNYARD_OUTPUT_DIR/release" ]; do sleep 0.05; done; echo finished'
)


def logs_view(app: RunyardApp) -> LogsView:
    view = app.views["logs"]
    assert isinstance(view, LogsView)
    return view


async def dispatch_and_follow(pilot: Pilot[int], store: WorkspaceStore, app: RunyardApp) -> LogPane:
    await start(pilot, probe=False)
    await pilot.press("2", "D")
    await until(
        pilot,
        lambda: all(r.status == RunStatus.RUNNING for r in store.runs()),
        app.controller.refresh_runs,
    )
    await pilot.press("l")
    await settle(pilot)
    panes = logs_view(app).panes()
    assert panes
    return panes[0]


def last_line(pane: LogPane) -> str:
    lines = pane.log_lines.lines
    return lines[-1] if lines else ""


def release(store: WorkspaceStore, name: str) -> None:
    """Let a waiting run finish (it polls for this file in its output folder)."""
    run = next(r for r in store.runs() if r.name == name)
    assert run.run_dir is not None
    worker_workspace = run.run_dir.rsplit("/.runyard/runs/", 1)[0]
    out = Path(output_dir_path(worker_workspace, name))
    out.mkdir(parents=True, exist_ok=True)
    (out / "release").write_text("")


async def test_follow_a_run_with_its_loss_curve_until_it_ends(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    add_run(store, RunSpec(command=TRAINING, name="trainer"))
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        pane = await dispatch_and_follow(pilot, store, app)
        await until(pilot, lambda: last_line(pane).startswith("step 400/400"))
        release(store, "trainer")
        await until(pilot, lambda: pane.stopped is not None)
        chart = pane.query_one(LineChart)  # redrawn once a second, and when the run ends
        assert list(chart.series) == ["loss"]  # losses win the chart over accuracies
        assert chart.series["loss"][-1] == 0.6
        assert pane.stopped == "the run has ended"
        assert pane.log_lines.lines[-1] == "finished"
        assert "the run has ended" in str(pane.query_one(".pane-header").render())


async def test_pause_holds_the_view_and_end_resumes(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    add_run(store, RunSpec(command=TRAINING, name="trainer"))
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        pane = await dispatch_and_follow(pilot, store, app)
        await pilot.press("p")
        log = pane.log_lines
        assert not log.following
        shown = list(log.lines)
        await until(pilot, lambda: bool(log.pending) and log.pending[-1].startswith("step 400/"))
        assert list(log.lines) == shown  # the view held still while the run went on
        assert log.pending_count > 0
        assert "PAUSED" in str(pane.query_one(".pane-header").render())
        await pilot.press("G")
        assert log.following and last_line(pane).startswith("step 400/400")
        assert not log.pending
        release(store, "trainer")
        await until(pilot, lambda: pane.stopped is not None)


async def test_search_highlights_and_steps_through_matches(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    add_run(store, RunSpec(command=TRAINING, name="trainer"))
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        pane = await dispatch_and_follow(pilot, store, app)
        await until(pilot, lambda: last_line(pane).startswith("step 400/400"))
        await pilot.press("slash", *"step 39", "enter")
        log = pane.log_lines
        found = len(log.matches)  # 390-399, and 39 unless the follow began after it
        assert found in (10, 11) and not log.following
        assert log.match_index == found - 1  # the newest match first
        await pilot.press("n")
        assert log.match_index == 0
        await pilot.press("N")
        assert log.match_index == found - 1
        assert f"/step 39 {found}/{found}" in str(pane.query_one(".pane-header").render())
        release(store, "trainer")
        await until(pilot, lambda: pane.stopped is not None)


async def test_a_flood_of_lines_stays_bounded(workspace: Workspace, store: WorkspaceStore) -> None:
    flood = (
        "python3 -c \"import sys\nfor i in range(60000): sys.stdout.write(f'it {i} loss={i}\\n')\"; "
        'while [ ! -e "$RUNYARD_OUTPUT_DIR/release" ]; do sleep 0.05; done'
    )
    add_run(store, RunSpec(command=flood, name="flood"))
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        pane = await dispatch_and_follow(pilot, store, app)
        await until(pilot, lambda: last_line(pane) == "it 59999 loss=59999")
        assert len(pane.log_lines.lines) <= LogsView.MAX_LINES
        release(store, "flood")
        await until(pilot, lambda: pane.stopped is not None)
        series = pane.query_one(LineChart).series["loss"]  # sampled, bounded, up to the end
        assert 0 < len(series) <= 2000 and series[-1] == 59999


async def test_follow_several_runs_and_close_a_pane(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    for name in ("one", "two"):
        add_run(store, RunSpec(command=TRAINING, name=name))
    app = console(workspace)
    app.services.store.worker("local")  # the local worker takes both at once
    from runyard.core.store.workers_file import find_index

    def two_slots(entries: object) -> None:
        entries[find_index(entries, "local")]["slots"] = 2  # type: ignore[index]

    store.edit_workers(two_slots, "test.slots")
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "D")
        await until(
            pilot,
            lambda: all(r.status == RunStatus.RUNNING for r in store.runs()),
            app.controller.refresh_runs,
        )
        await pilot.press("space", "space", "l")
        await settle(pilot)
        panes = logs_view(app).panes()
        assert {p.run_name for p in panes} == {"one", "two"}
        await until(pilot, lambda: all(last_line(p).startswith("step 400/") for p in panes))
        await pilot.press("x")
        await settle(pilot)
        assert len(logs_view(app).panes()) == 1
        assert not any(w.group.startswith("follow:") and w.is_running for w in app.workers
                       if w.group == f"follow:{panes[-1].run_id}")  # fmt: skip
        for name in ("one", "two"):
            release(store, name)
        await until(pilot, lambda: logs_view(app).panes()[0].stopped is not None)


async def test_a_pane_closed_and_reopened_at_once_comes_back_once(workspace: Workspace) -> None:
    """`x` then `l` on the same run before the old pane is gone: one pane, no duplicate id."""
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        app.action_view("logs")
        logs = logs_view(app)
        run = next(r for r in app.state.runs if r.is_active)
        await logs.open_panes([run])
        logs.close_pane(run.id)
        assert await logs.open_panes([run]) == [run]
        await settle(pilot)
        assert [p.run_id for p in logs.panes()] == [run.id]
        assert len(logs.query(LogPane)) == 1
