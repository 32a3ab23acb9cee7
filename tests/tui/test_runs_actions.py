"""Pilot tests of the Runs view's actions on the real local worker and the real queue file.

Runs really run (detached, through the run protocol); the tests wait on the console's own
check and probe workers until the queue says what they expect.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from runyard.core.dispatch import dispatch
from runyard.core.models import RunStatus
from runyard.core.runs import RunSpec, add_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.tui.app import RunyardApp
from runyard.tui.modals.dialogs import ConfirmModal
from runyard.tui.modals.run_form import RunFormModal
from runyard.tui.views.runs import RunsView
from runyard.tui.widgets.header import ConsoleHeader

from .harness import console, settle, start, until

SIZE = (160, 45)


def process_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting to be reaped does not count)."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z"


def cli(workspace: Workspace, *args: str) -> str:
    argv = [sys.executable, "-m", "runyard", "--workspace", str(workspace.root), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def runs_view(app: RunyardApp) -> RunsView:
    view = app.views["runs"]
    assert isinstance(view, RunsView)
    return view


def status_of(store: WorkspaceStore, name: str) -> RunStatus:
    return next(r.status for r in store.runs() if r.name == name)


def queue(store: WorkspaceStore, command: str, name: str, priority: int = 0) -> str:
    return add_run(store, RunSpec(command=command, name=name, priority=priority)).id


async def fill_form(pilot: Pilot[int], values: dict[str, str]) -> None:
    app = pilot.app
    assert isinstance(app.screen, RunFormModal)
    for key, value in values.items():
        app.screen.query_one(f"#field-{key}", Input).value = value
    await pilot.press("ctrl+s")


async def test_add_a_run_from_the_form(workspace: Workspace, store: WorkspaceStore) -> None:
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "a")
        await fill_form(
            pilot,
            {"command": "echo hello", "name": "from-form", "priority": "7", "env": "A=1 B='x y'"},
        )
        await settle(pilot)
        run = next(r for r in store.runs() if r.name == "from-form")
        assert (run.priority, run.env) == (7, {"A": "1", "B": "x y"})
        assert runs_view(app).table.row(run.id) is not None
        assert any("queued from-form" in e for e in [n.message for n in app._notifications])


async def test_the_form_refuses_bad_input_and_keeps_the_queue(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "a")
        await fill_form(pilot, {"command": "echo hi", "priority": "high"})
        assert isinstance(app.screen, RunFormModal)  # still open, with the error shown
        assert "priority" in str(app.screen.query_one(".error").render())
        await fill_form(pilot, {"command": "echo hi", "priority": "1", "name": "bad name!"})
        await settle(pilot)
        assert store.runs() == []  # the core refused the name; nothing was written
        assert any("bad name!" in error.text for error in app.controller.errors)


async def test_edit_a_pending_run_and_change_priorities(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    run_id = queue(store, "echo one", "editable", priority=1)
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "e")
        await settle(pilot)
        assert isinstance(app.screen, RunFormModal)
        assert app.screen.query_one("#field-command", Input).value == "echo one"
        await fill_form(pilot, {"command": "echo two", "name": "edited"})
        await settle(pilot)
        run = store.runs()[0]
        assert (run.id, run.name, run.command, run.priority) == (run_id, "edited", "echo two", 1)
        await pilot.press("plus", "plus")
        await settle(pilot)
        assert store.runs()[0].priority == 3
        await pilot.press("minus")
        await settle(pilot)
        assert store.runs()[0].priority == 2


async def test_dispatch_all_runs_on_the_local_worker_and_checks_them_to_done(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    queue(store, "echo epoch 1 loss=0.5; echo epoch 2 loss=0.25", "quick")
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "D")
        await settle(pilot)
        assert status_of(store, "quick") in (RunStatus.RUNNING, RunStatus.DONE)
        await until(
            pilot, lambda: status_of(store, "quick") == RunStatus.DONE, app.controller.refresh_runs
        )
        row = runs_view(app).table.row(store.runs()[0].id)
        assert row is not None and "loss=0.25" in "".join(t for t, _ in row.cells[-1])
        # The check tick told the operator the run finished.
        assert any("quick: running → done" in n.message for n in app._notifications)


async def test_cancel_asks_first_then_kills_the_run(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    queue(store, "sleep 120", "sleeper")
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "D")
        await until(
            pilot,
            lambda: status_of(store, "sleeper") == RunStatus.RUNNING,
            app.controller.refresh_runs,
        )
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await settle(pilot)
        assert status_of(store, "sleeper") == RunStatus.RUNNING
        await pilot.press("c", "y")
        await settle(pilot)
        assert status_of(store, "sleeper") == RunStatus.CANCELLED
        pid = store.runs()[0].pid
        assert pid is not None and not process_alive(pid)


async def test_retry_and_pull_a_finished_run(workspace: Workspace, store: WorkspaceStore) -> None:
    queue(
        store,
        'mkdir -p "$RUNYARD_OUTPUT_DIR" && echo w > "$RUNYARD_OUTPUT_DIR/w.txt"; exit 3',
        "fails",
    )
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "D")
        await until(
            pilot,
            lambda: status_of(store, "fails") == RunStatus.FAILED,
            app.controller.refresh_runs,
        )
        await pilot.press("p")
        await settle(pilot)
        run = store.runs()[0]
        assert run.pull is not None and run.pull.verified
        row = runs_view(app).table.row(run.id)
        assert row is not None and row.cells[9] == (("ok", "green"),)
        await pilot.press("r")
        await settle(pilot)
        run = store.runs()[0]
        assert run.status == RunStatus.PENDING and run.history[0]["exit_code"] == 3


async def test_a_change_made_by_the_cli_shows_within_one_refresh(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2")
        out = await asyncio.to_thread(
            cli, workspace, "run", "add", "--command", "echo cli", "--name", "from-cli"
        )
        run_id = out.split()[-1]
        app.controller.refresh_runs()  # one refresh tick
        await settle(pilot)
        assert runs_view(app).table.row(run_id) is not None
        await asyncio.to_thread(cli, workspace, "run", "cancel", run_id)
        app.controller.refresh_runs()
        await settle(pilot)
        row = runs_view(app).table.row(run_id)
        assert row is not None and row.cells[2][0][0] == "cancelled"


async def test_auto_dispatch_toggle_dispatches_on_the_runs_tick(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    queue(store, "echo auto", "auto")
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        app.controller.refresh_runs()
        await settle(pilot)
        assert status_of(store, "auto") == RunStatus.PENDING  # off by default
        await pilot.press("A")
        assert "auto-dispatch [b green]ON" in app.query_one(ConsoleHeader).text
        await until(
            pilot, lambda: status_of(store, "auto") == RunStatus.DONE, app.controller.refresh_runs
        )


@pytest.mark.skipif(
    "run_ids" not in inspect.signature(dispatch).parameters,
    reason="dispatching a selection needs core dispatch(run_ids=...) (asked of the lead)",
)
async def test_dispatch_only_the_marked_runs(workspace: Workspace, store: WorkspaceStore) -> None:
    queue(store, "echo a", "first", priority=1)
    queue(store, "echo b", "second", priority=2)
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "down", "space", "d")  # mark `first` (second row)
        await settle(pilot)
        assert status_of(store, "second") == RunStatus.PENDING
        assert status_of(store, "first") != RunStatus.PENDING


async def test_closing_and_reopening_loses_nothing(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    queue(store, "sleep 30", "survivor")
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "D")
        await until(
            pilot,
            lambda: status_of(store, "survivor") == RunStatus.RUNNING,
            app.controller.refresh_runs,
        )
        await pilot.press("a")
        await fill_form(pilot, {"command": "echo later", "name": "queued-before-close"})
        await settle(pilot)
    reopened = console(workspace)
    async with reopened.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        reopened.controller.refresh_runs()
        await settle(pilot)
        names = {r.name: r.status for r in reopened.state.runs}
        assert names == {"survivor": RunStatus.RUNNING, "queued-before-close": RunStatus.PENDING}


async def test_attach_suspends_runs_a_shell_on_the_worker_and_comes_back(
    workspace: Workspace, store: WorkspaceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(store, "sleep 30", "attachable")
    ran: list[list[str]] = []

    @contextmanager
    def fake_suspend() -> Iterator[None]:
        yield

    def fake_interactive(argv: list[str], cwd: Path | None = None) -> int:
        ran.append(list(argv))
        return 0

    monkeypatch.setattr("runyard.tui.controller.run_interactive", fake_interactive)
    app = console(workspace)
    monkeypatch.setattr(app, "suspend", fake_suspend)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2", "D")
        await until(
            pilot,
            lambda: status_of(store, "attachable") == RunStatus.RUNNING,
            app.controller.refresh_runs,
        )
        await pilot.press("s")  # a shell in the run's folder (or its tmux)
        run = store.runs()[0]
        assert ran and ran[0][:2] == ["bash", "-c"] and str(run.run_dir) in ran[0][2]
        await pilot.press("1", "s")  # a shell on the worker (Fleet)
        assert len(ran) == 2
        assert app.is_running
        app.controller.cancel([run.id])
        await settle(pilot)
