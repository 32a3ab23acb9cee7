"""The runyard console: every worker, GPU, run and alert in one keyboard-driven Textual app.

The app owns the `ConsoleState` and the refresh timers; the `ConsoleController` does the
work in Textual workers through `ConsoleServices` (the only door to the core), and the
views draw the state. Only the active view redraws, and only what changed.

While open, the console advances the pipeline: it probes the fleet every
`refresh.fleet_seconds`, checks runs (and, when auto-dispatch is on, dispatches) every
`refresh.runs_seconds`, and patrols. Closing it loses nothing: the files are the truth,
and what the operator set in the console itself (view, table filters and sorts, followed
logs, auto-dispatch, the Vast watcher) is kept in `.runyard/console.json` by the
`ConsoleMemoryKeeper`, saved at most once a second when it changed and on exit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from runyard.core.models import Run
from runyard.core.run_edits import spec_of
from runyard.core.runs import RunSpec
from runyard.core.secrets import known_secret_values, redact, split_env
from runyard.core.workspace import Workspace
from runyard.tui.controller import ConsoleController
from runyard.tui.memory_keeper import SAVE_SECONDS, ConsoleMemoryKeeper
from runyard.tui.messages import (
    AlertsFound,
    FleetProbed,
    GpuOwnersFound,
    LogBatch,
    LogFollowStopped,
    Notice,
    RunsChecked,
    RunsLoaded,
    Severity,
    SpendLoaded,
    TeardownDone,
    TeardownPlanned,
    VastLoaded,
    VastWatcherChanged,
    WorkersLoaded,
)
from runyard.tui.modals.dialogs import ConfirmModal, HelpModal, bindings_table
from runyard.tui.modals.run_form import RunFormModal
from runyard.tui.modals.teardown import TeardownModal
from runyard.tui.services import ConsoleServices
from runyard.tui.state import ConsoleState
from runyard.tui.views.alerts import AlertsView
from runyard.tui.views.base import ConsoleView
from runyard.tui.views.fleet import FleetView
from runyard.tui.views.gpus import GpuView
from runyard.tui.views.logs import LogPane, LogsView
from runyard.tui.views.runs import RunsView
from runyard.tui.views.vast import VastView
from runyard.tui.widgets.header import ConsoleHeader, ErrorsModal, header_markup

# (tab id, key, view class): the order of the tabs and of the number keys.
VIEWS: tuple[tuple[str, str, type[ConsoleView]], ...] = (
    ("fleet", "1", FleetView),
    ("runs", "2", RunsView),
    ("logs", "3", LogsView),
    ("gpus", "4", GpuView),
    ("alerts", "5", AlertsView),
    ("vast", "6", VastView),
)
MIN_PATROL_SECONDS = 15.0


class RunyardApp(App[int]):
    """The console over one workspace."""

    CSS_PATH = Path(__file__).parent / "styles" / "console.tcss"  # absolute: subclasses work
    TITLE = "runyard"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"view('{tab}')", view.TITLE, show=False) for tab, key, view in VIEWS),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("A", "toggle_auto_dispatch", "Auto-dispatch", show=False),
        Binding("E", "errors", "Errors (the header counts unseen ones)", show=False),
        Binding("R", "refresh", "Refresh", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        services: ConsoleServices,
        *,
        simulated: bool = False,
        workspace_label: str | None = None,
        clock: Callable[[], float] = time.time,
        timers: bool = True,
        auto_dispatch: bool | None = None,
    ) -> None:
        """`auto_dispatch` is the caller's explicit choice for this session (it wins over
        console.json and is not saved there); None lets the operator's saved choice apply.
        A caller that switches `controller.auto_dispatch` on before the console opens (as
        the screenshots do) counts as explicit too."""
        super().__init__()
        self.services = services
        self.simulated = simulated
        self.workspace_label = workspace_label or _short_path(services.workspace.root)
        self.clock = clock
        self.timers = timers
        self.state = ConsoleState()
        self.controller = ConsoleController(self, services, clock=clock, redact=self.redact)
        self.explicit_auto_dispatch = auto_dispatch
        if auto_dispatch is not None:
            self.controller.auto_dispatch = auto_dispatch
        self.last_patrol_at: float | None = None
        self._drawn: dict[str, int] = {}
        self.views: dict[str, ConsoleView] = {tab: view(id=f"{tab}-view") for tab, _, view in VIEWS}
        self.memory = ConsoleMemoryKeeper(self, services.workspace.state_dir)
        self._tab = "fleet"

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        # console.json is read here, as the console opens: the saved view is the first shown.
        saved_view = self.memory.load()
        if saved_view in self.views:
            self._tab = saved_view
        yield ConsoleHeader()
        with TabbedContent(initial=self._tab, id="views"):
            for tab, key, view in VIEWS:
                with TabPane(f"{key} {view.TITLE}", id=tab):
                    yield self.views[tab]
        yield Footer()

    def on_mount(self) -> None:
        if self.simulated:
            self.sub_title = "SIMULATED"
        self.memory.restore()
        self.controller.load_files()
        if self.timers:
            refresh = self.services.settings.refresh
            self.set_interval(refresh.fleet_seconds, self.controller.refresh_fleet)
            self.set_interval(refresh.runs_seconds, self.controller.refresh_runs)
            self.set_interval(
                max(MIN_PATROL_SECONDS, 3 * refresh.fleet_seconds), self.controller.patrol
            )
            self.call_after_refresh(self.action_refresh)
        self.call_after_refresh(self.view(self._tab).focus_main)
        self.set_interval(SAVE_SECONDS, self.memory.save)
        self._redraw_header()

    async def on_unmount(self) -> None:
        self.memory.save(final=True)
        await self.services.close()

    def redact(self, text: str) -> str:
        """`text` without the secrets this console could know (runs' `${secret:…}` values
        and the Vast key): for console.log, which a bug report may carry elsewhere."""
        names = {name for run in self.state.runs for name in split_env(run.env)[1].values()}
        secrets = known_secret_values({name: f"${{secret:{name}}}" for name in names})
        vast_key = os.environ.get("VAST_API_KEY", "").strip()
        if vast_key:
            secrets["VAST_API_KEY"] = vast_key
        return redact(text, secrets)

    # ------------------------------------------------------------ views

    def view(self, tab: str) -> ConsoleView:
        return self.views[tab]

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active or "fleet"

    @property
    def shown_tab(self) -> str:
        """The tab shown last, kept as an attribute: readable on exit, when the widgets (and
        `active_tab`) are gone. console.json saves it."""
        return self._tab

    def _version(self, tab: str) -> int:
        state = self.state
        return {
            "fleet": state.fleet_version,
            "gpus": state.fleet_version,
            "runs": state.runs_version,
            "alerts": state.alerts_version,
        }.get(tab, 0)

    def redraw(self, force: bool = False) -> None:
        """Redraw the active view if what it shows changed, and the header."""
        tab = self.active_tab
        version = self._version(tab)
        if force or self._drawn.get(tab) != version:
            self._drawn[tab] = version
            self.view(tab).show(self.state)
        self._redraw_header()

    def _redraw_header(self) -> None:
        self.query_one(ConsoleHeader).show(
            header_markup(
                self.workspace_label,
                self.state.summary(),
                simulated=self.simulated,
                auto_dispatch=self.controller.auto_dispatch,
                errors=self.controller.errors_unseen,
            )
        )

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id or "fleet"
        self._tab = tab
        self.redraw()
        self.view(tab).focus_main()

    def action_view(self, tab: str) -> None:
        self._tab = tab
        self.query_one(TabbedContent).active = tab
        self.redraw()
        self.view(tab).focus_main()

    def show_gpu_detail(self, worker: str) -> None:
        gpus = self.view("gpus")
        assert isinstance(gpus, GpuView)
        gpus.select(worker)
        self._drawn.pop("gpus", None)
        self.action_view("gpus")

    def show_worker(self, worker: str) -> None:
        self.action_view("fleet")
        fleet = self.view("fleet")
        assert isinstance(fleet, FleetView)
        fleet.table.move_cursor(worker)

    def show_run(self, run_id: str) -> None:
        self.action_view("runs")
        runs = self.view("runs")
        assert isinstance(runs, RunsView)
        if run_id not in runs.table.order:
            runs.status_filter = None
            runs.table.set_filter("")
            runs.show(self.state)
        runs.table.move_cursor(run_id)

    def last_patrol_text(self) -> str:
        if self.last_patrol_at is None:
            return "pending"
        return f"{self.clock() - self.last_patrol_at:.0f}s ago"

    # ------------------------------------------------------------ messages from workers

    def on_workers_loaded(self, message: WorkersLoaded) -> None:
        self.state.set_workers(message.workers)
        self.redraw()

    def on_fleet_probed(self, message: FleetProbed) -> None:
        self.state.apply_probes(message.probes, self.clock())
        self.redraw()

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.state.set_runs(message.runs)
        self.redraw()
        follows = self.memory.follows_to_resume(self.state.runs)
        if follows:
            self.call_later(self._open_logs, follows, False)

    def on_runs_checked(self, message: RunsChecked) -> None:
        self.state.last_check_at = self.clock()
        for change in message.changes:
            severity: Severity = (
                "error" if change.new.value in ("failed", "lost") else "information"
            )
            reason = f" ({change.reason})" if change.reason else ""
            self.notify(
                f"{change.name}: {change.old.value} → {change.new.value}{reason}", severity=severity
            )

    def on_alerts_found(self, message: AlertsFound) -> None:
        self.last_patrol_at = self.clock()
        self.state.set_alerts(message.alerts)
        self.redraw()

    def on_notice(self, message: Notice) -> None:
        self.notify(
            message.text, severity=message.severity, timeout=8 if message.severity == "error" else 4
        )
        if message.severity == "error":
            self._redraw_header()  # the unseen-errors count

    def on_log_batch(self, message: LogBatch) -> None:
        logs = self.view("logs")
        assert isinstance(logs, LogsView)
        logs.add_batch(message.run_id, message.chunk)

    def on_log_follow_stopped(self, message: LogFollowStopped) -> None:
        logs = self.view("logs")
        assert isinstance(logs, LogsView)
        logs.follow_stopped(message.run_id, message.reason)

    def on_gpu_owners_found(self, message: GpuOwnersFound) -> None:
        gpus = self.view("gpus")
        assert isinstance(gpus, GpuView)
        gpus.set_owners(message.worker, message.owners)

    def on_teardown_planned(self, message: TeardownPlanned) -> None:
        plan = message.plan

        def confirmed(typed: str | None) -> None:
            if typed is not None:
                self.controller.teardown(plan.worker, plan.action, typed, plan.uptime_s)

        self.push_screen(TeardownModal(plan), confirmed)

    def on_teardown_done(self, message: TeardownDone) -> None:
        outcome = message.outcome
        lines = [
            f"{outcome.plan.worker}: {outcome.plan.action.value} done; disabled in workers.yaml"
        ]
        lines += outcome.instructions
        if outcome.provider_message:
            lines.append(outcome.provider_message)
        self.notify("\n".join(lines), timeout=15)

    def on_spend_loaded(self, message: SpendLoaded) -> None:
        self.state.spent_today = message.today
        self._redraw_header()

    def on_vast_loaded(self, message: VastLoaded) -> None:
        vast = self.view("vast")
        assert isinstance(vast, VastView)
        vast.set_data(
            message.instances, message.offers, message.cost, message.problem, message.offers_error
        )

    def on_vast_watcher_changed(self, message: VastWatcherChanged) -> None:
        if not self.is_running:
            return  # the watcher says it stopped because the console is closing
        vast = self.view("vast")
        assert isinstance(vast, VastView)
        vast.set_watcher(message.state)

    # ------------------------------------------------------------ actions the views ask for

    def open_run_form(self, run: Run | None) -> None:
        def saved(spec: RunSpec | None) -> None:
            if spec is None:
                return
            if run is None:
                self.controller.add_run(spec)
            else:
                self.controller.edit_run(run.id, spec)

        title = "Add a run" if run is None else f"Edit pending run {run.name} ({run.id})"
        self.push_screen(RunFormModal(title, spec_of(run) if run else None), saved)

    def confirm(self, question: str, on_yes: Callable[[], None]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                on_yes()

        self.push_screen(ConfirmModal(question), answered)

    def follow_logs(self, runs: Sequence[Run]) -> None:
        self.action_view("logs")
        self.call_later(self._open_logs, list(runs))

    async def _open_logs(self, runs: list[Run], focus: bool = True) -> None:
        logs = self.view("logs")
        assert isinstance(logs, LogsView)
        for run in await logs.open_panes(runs):
            self.controller.follow(run)
        if focus or self.active_tab == "logs":
            logs.focus_main()

    # ------------------------------------------------------------ global actions

    def action_refresh(self) -> None:
        self.controller.refresh_fleet()
        self.controller.refresh_runs()
        self.controller.patrol()

    def action_toggle_auto_dispatch(self) -> None:
        self.controller.set_auto_dispatch(not self.controller.auto_dispatch)
        self.state.auto_dispatch = self.controller.auto_dispatch
        self.memory.auto_dispatch_choice = self.controller.auto_dispatch
        self._redraw_header()
        self.notify(f"auto-dispatch {'on' if self.controller.auto_dispatch else 'off'}")

    def action_help(self) -> None:
        self.push_screen(HelpModal(bindings_table(self.help_sections())))

    def action_errors(self) -> None:
        """List the recent failures, newest first; they count as seen from now on."""
        self.push_screen(ErrorsModal(self.controller.errors, self.controller.journal_path))
        self.controller.mark_errors_seen()
        self._redraw_header()

    def help_sections(self) -> list[tuple[str, Iterable[BindingType]]]:
        sections: list[tuple[str, Iterable[BindingType]]] = [
            (
                "Everywhere",
                [
                    Binding("1-6", "", "switch view (Fleet, Runs, Logs, GPUs, Alerts, Vast)"),
                    Binding("ctrl+p", "", "command palette: every action by name"),
                    *(b for b in self.BINDINGS if isinstance(b, Binding) and not b.key.isdigit()),
                ],
            ),
            ("Tables (Fleet, Runs, GPUs, Alerts)", _table_bindings()),
        ]
        for _tab, _key, view in VIEWS:
            bindings = list(view.BINDINGS) if view is not LogsView else list(LogPane.BINDINGS)
            sections.append((view.TITLE, bindings))
        return sections

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for tab, key, view in VIEWS:
            yield SystemCommand(
                f"View: {view.TITLE}",
                f"switch to the {view.TITLE} view ({key})",
                partial(self.action_view, tab),
            )
        yield SystemCommand(
            "Refresh now", "probe the fleet, check runs and patrol (R)", self.action_refresh
        )
        yield SystemCommand(
            "Toggle auto-dispatch",
            "dispatch pending runs on every check (A)",
            self.action_toggle_auto_dispatch,
        )
        yield SystemCommand(
            "Errors: recent console errors",
            "every failure this console noticed, newest first; marks them seen (E)",
            self.action_errors,
        )
        yield SystemCommand("Help: keys", "every key of every view (?)", self.action_help)
        for tab, _key, view in VIEWS:
            bindings = LogPane.BINDINGS if view is LogsView else view.BINDINGS
            for binding in bindings:
                if isinstance(binding, Binding) and binding.description and binding.show:
                    yield SystemCommand(
                        f"{view.TITLE}: {binding.description}",
                        f"key {binding.key_display or binding.key.split(',')[0]} in {view.TITLE}",
                        partial(self._palette_action, tab, binding.action),
                    )

    def _palette_action(self, tab: str, action: str) -> None:
        self.action_view(tab)
        target: ConsoleView | LogPane = self.view(tab)
        if isinstance(target, LogsView):
            panes = target.panes()
            if not panes:
                self.notify("no log is followed yet", severity="warning")
                return
            focused = next((p for p in panes if p.has_focus_within), panes[-1])
            target = focused
        self.call_later(target.run_action, action)


def _table_bindings() -> list[BindingType]:
    from runyard.tui.views.base import TableView
    from runyard.tui.widgets.fast_table import FastTable

    return [
        Binding("up/down j/k", "", "move"),
        Binding("pgup/pgdn home/end", "", "page, first, last"),
        Binding("space", "", "mark the row (actions apply to marked rows, else the cursor's)"),
        *(b for b in TableView.BINDINGS if isinstance(b, Binding) and b.show),
        *(b for b in FastTable.BINDINGS if isinstance(b, Binding) and b.key == "enter"),
    ]


def _short_path(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


def run_console(
    workspace: Workspace, *, simulated: bool = False, auto_dispatch: bool | None = None
) -> int:
    """Open the console on `workspace` until the operator quits; the exit status.

    A workspace whose workers are `runyard demo`'s is labelled SIMULATED whether or not
    `simulated` is passed (`runyard console` on a `demo --headless` workspace, say).
    """
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.sim.catalog import is_sim_entry

    workers = WorkspaceStore(workspace).workers()
    simulated = simulated or any(is_sim_entry(worker.to_dict()) for worker in workers)
    app = RunyardApp(ConsoleServices(workspace), simulated=simulated, auto_dispatch=auto_dispatch)
    result = app.run()
    return result if isinstance(result, int) else (app.return_code or 0)
