"""console.json: what the operator set in the console survives closing and reopening it.

The pure load/save/merge functions first, then Pilot tests of the real app (waiting on its
workers and messages, never on the clock).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakes.sandbox_fleet import SandboxFleet
from fakes.vast_workspace import configure_vast, sim_fixture  # noqa: F401  (fixture)
from runyard.core.models import Run, RunStatus
from runyard.core.runs import RunSpec, add_run
from runyard.core.store import console_memory
from runyard.core.store.console_memory import ConsoleMemory, TableMemory
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.sim.vast_api import SimVast
from runyard.tui.app import RunyardApp
from runyard.tui.services import ConsoleServices
from runyard.tui.views.fleet import FleetView
from runyard.tui.views.logs import LogsView
from runyard.tui.views.runs import RunsView
from runyard.tui.views.vast import VastView
from runyard.tui.widgets.header import ConsoleHeader

from .harness import console, settle, start, until

pytestmark = pytest.mark.timeout(120)
SIZE = (160, 45)
WAITS = 'while [ ! -e "$RUNYARD_OUTPUT_DIR/release" ]; do sleep 0.05; done; echo finished'


@pytest.fixture
def client_home(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated market needs no SSH client home in these tests."""


def memory_file(workspace: Workspace) -> Path:
    return workspace.state_dir / "console.json"


def saved(workspace: Workspace) -> dict[str, object]:
    data = json.loads(memory_file(workspace).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def views(app: RunyardApp) -> tuple[FleetView, RunsView, LogsView, VastView]:
    fleet, runs, logs, vast = (app.views[t] for t in ("fleet", "runs", "logs", "vast"))
    assert isinstance(fleet, FleetView) and isinstance(runs, RunsView)
    assert isinstance(logs, LogsView) and isinstance(vast, VastView)
    return fleet, runs, logs, vast


def status(store: WorkspaceStore, run_id: str) -> RunStatus:
    return next(r.status for r in store.runs() if r.id == run_id)


def notices(app: RunyardApp) -> list[str]:
    return [n.message for n in app._notifications]


# ---------------------------------------------------------------- pure functions


def test_memory_round_trips_as_readable_json(tmp_path: Path) -> None:
    memory = ConsoleMemory(
        view="logs",
        tables={"fleet": TableMemory("a100", "util", True), "runs": TableMemory()},
        runs_status="running",
        vast_query="ref=4@10",
        followed=("r1", "r2"),
        auto_dispatch=True,
        vast_watcher=True,
    )
    path = tmp_path / ".runyard" / "console.json"
    assert console_memory.save(path, memory) is None
    text = path.read_text(encoding="utf-8")
    assert '"view": "logs"' in text and "\n  " in text  # indented, one key a line
    assert "runs" not in json.loads(text)["tables"]  # default settings are not written
    loaded = console_memory.load(path)
    assert loaded.ok
    assert loaded.memory == ConsoleMemory(
        view="logs",
        tables={"fleet": TableMemory("a100", "util", True)},
        runs_status="running",
        vast_query="ref=4@10",
        followed=("r1", "r2"),
        auto_dispatch=True,
        vast_watcher=True,
    )
    assert console_memory.load(tmp_path / "missing.json") == console_memory.Loaded(ConsoleMemory())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"view": "runs",', "line 1 column"),
        ('["runs"]', "expected a JSON object"),
        ('{"view": 3}', "field 'view'"),
        ('{"tables": {"fleet": {"reverse": "yes"}}}', "field 'tables.fleet.reverse'"),
        ('{"followed": "r1"}', "field 'followed'"),
        ('{"version": 9}', "field 'version'"),
    ],
)
def test_a_bad_file_gives_the_defaults_and_names_what_is_wrong(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "console.json"
    path.write_text(content, encoding="utf-8")
    loaded = console_memory.load(path)
    assert loaded.memory == ConsoleMemory()
    assert loaded.problem is not None and problem in loaded.problem


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "console.json"
    path.write_text('{"view": "runs", "from_the_future": [1, 2]}', encoding="utf-8")
    assert console_memory.load(path).memory == ConsoleMemory(view="runs")


def test_saving_over_a_refused_file_keeps_it_as_bad(tmp_path: Path) -> None:
    path = tmp_path / "console.json"
    path.write_text("{oops", encoding="utf-8")
    moved = console_memory.save(path, ConsoleMemory(view="runs"), keep_bad=True)
    assert moved == tmp_path / "console.json.bad"
    assert moved.read_text(encoding="utf-8") == "{oops"
    assert console_memory.load(path).memory.view == "runs"


def test_precedence_and_follow_targets() -> None:
    resolve = console_memory.resolve_auto_dispatch
    assert resolve(True, None) is True and resolve(None, None) is False
    assert resolve(False, True) is True and resolve(True, False) is False
    runs = [
        Run(id="ra", name="a", command="x", status=RunStatus.RUNNING, run_dir="/w/ra"),
        Run(id="rb", name="b", command="x", status=RunStatus.PENDING),
        Run(id="rc", name="c", command="x", status=RunStatus.DONE, run_dir="/w/rc"),
    ]
    targets = console_memory.follow_targets(["rc", "gone", "rb", "ra"], runs)
    assert [r.id for r in targets] == ["rc", "ra"]  # saved order; no log or gone: skipped


# ---------------------------------------------------------------- the console


async def test_reopening_restores_view_filter_sort_followed_runs_and_auto_dispatch(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    run_id = add_run(store, RunSpec(command=WAITS, name="kept")).id
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        fleet, runs, logs, _ = views(app)
        await pilot.press("1", "o", "O")  # order by the first sort column, then reverse it
        sort = (fleet.table.sort_column, fleet.table.sort_reverse)
        assert sort[0] is not None
        await pilot.press("slash", *"loc", "enter")
        assert fleet.table.filter_text == "loc"
        await pilot.press("2", "D")
        await until(pilot, lambda: status(store, run_id) == RunStatus.RUNNING,
                    app.controller.refresh_runs)  # fmt: skip
        await pilot.press("l")  # follow its log: the Logs view opens
        await until(pilot, lambda: logs.pane(run_id) is not None)
        await pilot.press("2", "f", "A", "3")  # runs: status "pending"; auto-dispatch on
        assert runs.status_filter == RunStatus.PENDING
        assert app.active_tab == "logs"

    data = saved(workspace)  # written on exit at the latest, as plain JSON
    assert data["view"] == "logs" and data["followed"] == [run_id]
    assert data["tables"] == {"fleet": {"filter": "loc", "sort": sort[0], "reverse": sort[1]}}
    assert data["runs_status"] == "pending" and data["auto_dispatch"] is True

    reopened = console(workspace)
    async with reopened.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        fleet, runs, logs, _ = views(reopened)
        await until(pilot, lambda: logs.pane(run_id) is not None)
        assert reopened.active_tab == "logs"
        assert (fleet.table.sort_column, fleet.table.sort_reverse) == sort
        assert fleet.table.filter_text == "loc"
        assert runs.status_filter == RunStatus.PENDING
        assert reopened.controller.auto_dispatch is True
        assert "auto-dispatch [b green]ON" in reopened.query_one(ConsoleHeader).text
        assert reopened.controller.busy(f"follow:{run_id}")  # followed again, not just a pane
        reopened.controller.cancel([run_id])
        await settle(pilot)


async def test_an_explicit_auto_dispatch_wins_for_the_session_and_is_not_saved(
    workspace: Workspace,
) -> None:
    memory_file(workspace).write_text('{"auto_dispatch": false}\n', encoding="utf-8")
    app = console(workspace)
    app.controller.auto_dispatch = True  # as `runyard demo` does before the console opens
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        assert app.controller.auto_dispatch is True
        await pilot.press("2")  # a change, so the file is written on exit
    assert saved(workspace)["auto_dispatch"] is False  # still the operator's choice

    memory_file(workspace).write_text('{"auto_dispatch": true}\n', encoding="utf-8")
    services = ConsoleServices(
        workspace, fleet=SandboxFleet(workspace, WorkspaceStore(workspace).settings())
    )
    off = RunyardApp(services, timers=False, auto_dispatch=False)
    async with off.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        assert off.controller.auto_dispatch is False
        assert "auto-dispatch off" in off.query_one(ConsoleHeader).text


async def test_a_corrupt_console_json_is_reported_and_kept_until_a_change(
    workspace: Workspace,
) -> None:
    path = memory_file(workspace)
    path.write_text('{"view": "runs",\n "tables": {', encoding="utf-8")
    original = path.read_bytes()
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        assert app.is_running and app.active_tab == "fleet"  # the defaults
        said = [n for n in notices(app) if str(path) in n]
        assert len(said) == 1 and "line 2" in said[0] and "console.json.bad" in said[0]
        await pilot.press("R")  # work that changes no setting
        await settle(pilot)
    assert path.read_bytes() == original  # not overwritten: the operator changed nothing
    assert not (path.parent / "console.json.bad").exists()

    again = console(workspace)
    async with again.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2")  # a change
    assert saved(workspace)["view"] == "runs"
    assert (path.parent / "console.json.bad").read_bytes() == original


async def test_the_vast_watcher_and_offer_query_survive_a_restart(
    workspace: Workspace, sim: SimVast
) -> None:
    configure_vast(workspace, sim, {"poll_seconds": 0.05, "max_instances": 0})
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("6")
        vast = views(app)[3]
        await pilot.press("slash", *"ref=10", "enter")
        await settle(pilot)
        vast.instances_table.focus()
        await pilot.press("w")
        await until(pilot, lambda: vast.watcher_state is not None and vast.watcher_state.polls > 0)
    assert saved(workspace)["vast_watcher"] is True

    reopened = console(workspace)
    async with reopened.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        vast = views(reopened)[3]
        assert reopened.active_tab == "vast" and vast.query_text == "ref=10"
        await until(pilot, lambda: vast.watcher_state is not None and vast.watcher_state.polls > 0)
        assert reopened.controller.vast_watching
        assert any("Vast watcher resumed" in n for n in notices(reopened))
        vast.instances_table.focus()
        await pilot.press("w")
        await until(pilot, lambda: not reopened.controller.busy("vast-watch"))
        assert reopened.controller.errors == []
    assert saved(workspace)["vast_watcher"] is False
