"""Pilot tests of every view on a synthetic fleet: rows, keys, sorting, filtering, palette, help.

Every wait is on the console's workers and messages (`settle`), never on the clock.
"""

from __future__ import annotations

from textual.command import CommandPalette
from textual.widgets import TabbedContent

from runyard.core.workspace import Workspace
from runyard.tui.app import RunyardApp
from runyard.tui.modals.dialogs import HelpModal
from runyard.tui.views.alerts import AlertsView
from runyard.tui.views.fleet import FleetView
from runyard.tui.views.gpus import GpuView
from runyard.tui.views.runs import RunsView
from runyard.tui.widgets.fast_table import FastTable
from runyard.tui.widgets.header import ConsoleHeader

from .harness import SAMPLE_ALERTS, settle, start, synthetic_console

SIZE = (180, 50)


def fleet(app: RunyardApp) -> FleetView:
    view = app.views["fleet"]
    assert isinstance(view, FleetView)
    return view


def plain_row(table: FastTable, key: str) -> list[str]:
    row = table.row(key)
    assert row is not None
    return ["".join(text for text, _ in cell) for cell in row.cells]


async def test_fleet_shows_every_worker_with_gpus_disk_price_and_alerts(
    workspace: Workspace,
) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        table = fleet(app).table
        assert table.total_count == 7  # local + sim-000..sim-005
        row = plain_row(table, "sim-001")
        assert row[1] == "vastai" and row[2] == "vast"
        assert row[3].endswith("ms") and "/4" in row[4]
        assert "G/" in row[6] and row[7].endswith("W") and row[8].endswith("°")
        assert "%" in row[9] and "i" in row[9]
        assert row[10] == "$0.75" and row[12] == "sweep-lr0.01"
        assert plain_row(table, "sim-004")[3] == "DOWN"
        # The alerts view's findings are counted per worker in the fleet view.
        app.controller.patrol()
        await settle(pilot)
        assert plain_row(table, "sim-003")[11] == "1"


async def test_header_counts_workers_gpus_runs_money_and_alerts(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        app.controller.patrol()
        await settle(pilot)
        text = app.query_one(ConsoleHeader).text
        assert "workers 6/7 up" in text
        assert "GPUs 15/24 busy" in text  # two or three of four per box
        assert "2 running" in text and "2 pending" in text and "1 failed" in text
        # Enabled, reachable, priced: sim-001 0.75 + sim-002 1.15 + sim-005 2.35 (sim-004 down).
        assert "$4.25/h" in text
        assert "3 alerts (1 critical)" in text
        assert "SIMULATED" not in text


async def test_a_probe_redraws_only_rows_that_changed(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        table = fleet(app).table
        before = table.row_updates
        table.set_rows([table.row(key) for key in table.order])  # type: ignore[misc]
        assert table.row_updates == before  # same values: nothing redrawn
        app.controller.refresh_fleet()
        await settle(pilot)
        # Every reachable worker's GPUs moved; the unreachable one did not change.
        assert table.row_updates - before == 6


async def test_number_keys_and_tabs_switch_views(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        tabs = app.query_one(TabbedContent)
        for key, tab in (
            ("2", "runs"),
            ("3", "logs"),
            ("4", "gpus"),
            ("5", "alerts"),
            ("1", "fleet"),
        ):
            await pilot.press(key)
            await settle(pilot)
            assert tabs.active == tab
        await pilot.press("2")
        await settle(pilot)
        assert isinstance(app.focused, FastTable) and app.focused.id == "runs-view-table"


async def test_fleet_sort_and_filter_from_the_keyboard(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        view = fleet(app)
        await pilot.press("o")  # order by util, busiest first
        assert view.table.sort_column == "util" and view.table.sort_reverse
        utils = [view.table.row(k).sort_values[5] for k in view.table.order]  # type: ignore[union-attr]
        known = [u for u in utils if u is not None]
        assert known == sorted(known, reverse=True)
        assert utils[-1] is None and view.table.order[-1] == "sim-004"  # unreachable: last
        await pilot.press("slash", "t", "a", "i", "l", "n", "e", "t", "enter")
        assert sorted(view.table.order) == ["sim-000", "sim-003"]
        assert "2 of 7 workers" in str(view.query_one(".status").render())
        await pilot.press("slash", "escape")
        assert view.table.row_count == 7


async def test_cursor_moves_without_redrawing_the_table(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        table = fleet(app).table
        await pilot.press("down", "down")
        assert table.cursor_key == "sim-001"
        assert "3/7 workers" in str(fleet(app).query_one(".status").render())
        await pilot.press("end")
        assert table.cursor_key == "sim-005"


async def test_cursor_past_the_edge_scrolls_half_a_page_not_every_move(
    workspace: Workspace,
) -> None:
    app = synthetic_console(workspace, workers=100)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        table = fleet(app).table
        visible = table.scrollable_content_region.height - 1
        await pilot.press(*["down"] * (visible - 1))  # the last row on screen: no scroll yet
        assert table.scroll_y == 0
        await pilot.press("down")
        jumped = table.scroll_y
        assert jumped == visible // 2
        await pilot.press(*["down"] * (visible // 2 - 1))  # still on screen: no scroll
        assert table.scroll_y == jumped
        cursor_row = table.cursor_index - int(table.scroll_y)
        assert 0 <= cursor_row < visible
        await pilot.press("home")
        assert table.scroll_y == 0 and table.cursor_index == 0


async def test_enter_on_a_worker_opens_its_gpu_detail(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        app.controller.refresh_fleet()  # two probes: the charts have history
        await settle(pilot)
        await pilot.press("down", "down", "enter")
        await settle(pilot)
        assert app.query_one(TabbedContent).active == "gpus"
        gpus = app.views["gpus"]
        assert isinstance(gpus, GpuView) and gpus.worker_name == "sim-001"
        assert len(gpus.query("GpuPanel")) == 4
        await pilot.press("right_square_bracket")
        assert gpus.worker_name == "sim-002"


async def test_alerts_view_lists_findings_with_their_fix_and_goes_to_the_worker(
    workspace: Workspace,
) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        app.controller.patrol()
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        view = app.views["alerts"]
        assert isinstance(view, AlertsView)
        assert view.table.total_count == len(SAMPLE_ALERTS)
        detail = str(view.query_one(".detail").render())
        assert "fix:" in detail
        await pilot.press("enter")
        await settle(pilot)
        # The first alert is about sim-003's zombie: Enter shows that worker in Fleet.
        assert app.query_one(TabbedContent).active == "fleet"
        assert fleet(app).table.cursor_key == view.state.alerts[0].worker


async def test_stale_log_alert_goes_to_its_run(workspace: Workspace) -> None:
    app = synthetic_console(workspace, alerts=[SAMPLE_ALERTS[2]])
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        app.controller.patrol()
        await settle(pilot)
        await pilot.press("5", "enter")
        await settle(pilot)
        runs = app.views["runs"]
        assert isinstance(runs, RunsView)
        assert app.query_one(TabbedContent).active == "runs"
        assert runs.table.cursor_key == "r2b3c4d"


async def test_help_lists_the_keys_of_every_view(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpModal)
        for needle in ("Dispatch all", "Teardown", "Pause/resume", "Prev worker", "Patrol now"):
            assert needle in app.screen.text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpModal)


async def test_every_view_action_is_in_the_command_palette(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for expected in ("View: Runs", "Runs: Dispatch all", "Fleet: Teardown", "Logs: Search",
                         "GPUs: Next worker", "Alerts: Patrol now", "Toggle auto-dispatch"):  # fmt: skip
            assert expected in titles
        await pilot.press("ctrl+p")
        await settle(pilot)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"status")
        await pilot.press("enter")
        await settle(pilot)
        runs = app.views["runs"]
        assert isinstance(runs, RunsView)
        assert app.query_one(TabbedContent).active == "runs"
        assert runs.status_filter is not None


async def test_runs_view_filters_by_status_and_project(workspace: Workspace) -> None:
    app = synthetic_console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("2")
        runs = app.views["runs"]
        assert isinstance(runs, RunsView)
        assert runs.table.row_count == 8
        await pilot.press("f")  # pending
        assert runs.table.order == ["r3c4d5e", "r4d5e6f"]  # by priority
        await pilot.press("f")  # dispatched
        assert runs.table.row_count == 0
        for _ in range(6):
            await pilot.press("f")  # back to all
        assert runs.table.row_count == 8
        await pilot.press("slash", *"project:ablation", "enter")
        assert runs.table.order == ["r3c4d5e"]
