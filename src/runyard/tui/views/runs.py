"""The Runs view: the queue with status, worker, age, attempts and last metrics, and its actions."""

from __future__ import annotations

import time
from typing import ClassVar

from textual.binding import Binding, BindingType

from runyard.core.models import FINISHED_STATES, Run, RunStatus
from runyard.tui import format as fmt
from runyard.tui.format import cell
from runyard.tui.state import ConsoleState
from runyard.tui.views.base import TableView
from runyard.tui.widgets.fast_table import Column, FastTable, Row

STATUS_STYLES = {
    RunStatus.PENDING: "yellow",
    RunStatus.DISPATCHED: "cyan",
    RunStatus.RUNNING: "bold green",
    RunStatus.DONE: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.LOST: "bold magenta",
    RunStatus.CANCELLED: "bright_black",
}
STATUS_ORDER = {status: index for index, status in enumerate(RunStatus)}
# What `f` cycles through: all, then each status.
STATUS_FILTERS: tuple[RunStatus | None, ...] = (None, *RunStatus)

RUN_COLUMNS = (
    Column("id", "ID", 9),
    Column("name", "NAME", 22),
    Column("status", "STATUS", 10),
    Column("worker", "WORKER", 14),
    Column("project", "PROJECT", 10),
    Column("priority", "PRI", 4, "right"),
    Column("age", "AGE", 6, "right"),
    Column("attempts", "TRY", 3, "right"),
    Column("exit", "EXIT", 4, "right"),
    Column("pull", "PULL", 5),
    Column("metrics", "LAST METRICS"),
)


def _pull_cell(run: Run) -> fmt.Cell:
    if run.pull is None:
        return cell("")
    return cell("ok", fmt.GOOD) if run.pull.verified else cell("BAD", f"bold {fmt.BAD}")


def run_row(run: Run, now: float) -> Row:
    """The row of one run (ages are relative to `now`, so tests can pin the clock)."""
    started = run.started_at or run.dispatched_at or run.created_at
    where = run.worker or (f"→{run.pinned_worker}" if run.pinned_worker else (run.pool or ""))
    detail = fmt.metric_text(run.metrics) or (run.error or "")
    return Row(
        key=run.id,
        cells=(
            cell(run.id, fmt.MUTED),
            cell(run.name, "bold" if run.is_active else ""),
            cell(run.status.value, STATUS_STYLES[run.status]),
            cell(where, "" if run.worker else fmt.MUTED),
            cell(run.project or "", fmt.MUTED),
            cell(str(run.priority) if run.priority else "", ""),
            cell(fmt.age(started, now)),
            cell(str(run.attempts) if run.attempts else ""),
            cell(
                "" if run.exit_code is None else str(run.exit_code),
                fmt.BAD if run.exit_code else "",
            ),
            _pull_cell(run),
            cell(detail, fmt.BAD if run.error and not run.metrics else ""),
        ),
        sort_values=(
            run.id,
            run.name,
            STATUS_ORDER[run.status],
            run.worker,
            run.project,
            run.priority,
            fmt.parse_utc(started),
            run.attempts,
            run.exit_code,
            None,
            detail,
        ),
        search_text=" ".join(
            (
                run.id,
                run.name,
                f"status:{run.status.value}",
                f"project:{run.project or ''}",
                run.worker or "",
                run.pool or "",
                run.command,
            )
        ).lower(),
    )


class RunsView(TableView):
    """Every run in the queue, newest work first, and what can be done to it."""

    TITLE = "Runs"
    NOUN = "runs"
    COLUMNS = RUN_COLUMNS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("plus,equals_sign", "priority(1)", "Pri+", key_display="+"),
        Binding("minus", "priority(-1)", "Pri-", key_display="-"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("d", "dispatch", "Dispatch"),
        Binding("D", "dispatch_all", "Dispatch all"),
        Binding("l,enter", "logs", "Logs"),
        Binding("p", "pull", "Pull"),
        Binding("f", "status_filter", "Status"),
        Binding("s", "attach", "Shell"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.status_filter: RunStatus | None = None
        self.clock = time.time

    def show(self, state: ConsoleState) -> None:
        now = self.clock()
        runs = state.runs
        if self.status_filter is not None:
            runs = [r for r in runs if r.status == self.status_filter]
        # Active work first, then pending by priority, then the rest newest first.
        ordered = sorted(
            runs,
            key=lambda r: (
                0 if r.is_active else 1 if r.status == RunStatus.PENDING else 2,
                -r.priority if r.status == RunStatus.PENDING else 0,
                _negated(r.created_at),
            ),
        )
        self.set_rows([run_row(run, now) for run in ordered])

    def status_extra(self) -> str:
        status = self.status_filter.value if self.status_filter else "all"
        return f"status {status} (f) · / filter: words, status:…, project:… · space marks"

    def _runs(self) -> list[Run]:
        found = [self.state.run(key) for key in self.selected()]
        return [run for run in found if run is not None]

    def _one(self) -> Run | None:
        key = self.current_key()
        return self.state.run(key) if key else None

    def on_fast_table_activated(self, event: FastTable.Activated) -> None:
        event.stop()
        self.action_logs()

    def action_add(self) -> None:
        self.console.open_run_form(None)

    def action_edit(self) -> None:
        run = self._one()
        if run is None:
            return
        if run.status != RunStatus.PENDING:
            self.console.notify(
                f"{run.name} is {run.status.value}: only pending runs can be edited",
                severity="warning",
            )
            return
        self.console.open_run_form(run)

    def action_priority(self, delta: int) -> None:
        runs = [r for r in self._runs() if r.status == RunStatus.PENDING]
        if not runs:
            self.console.notify("priority only changes pending runs", severity="warning")
            return
        self.console.controller.change_priority(runs, delta)

    def action_cancel(self) -> None:
        runs = [r for r in self._runs() if r.status not in FINISHED_STATES]
        if not runs:
            self.console.notify(
                "nothing to cancel: the selected runs have finished", severity="warning"
            )
            return
        names = ", ".join(r.name for r in runs)
        self.console.confirm(
            f"Cancel {len(runs)} run(s)?\n{names}\nRunning processes get SIGTERM, then SIGKILL.",
            lambda: self.console.controller.cancel([r.id for r in runs]),
        )

    def action_retry(self) -> None:
        runs = [r for r in self._runs() if r.status in FINISHED_STATES]
        if not runs:
            self.console.notify("only finished runs can be retried", severity="warning")
            return
        self.console.controller.retry([r.id for r in runs])

    def action_dispatch(self) -> None:
        runs = [r for r in self._runs() if r.status == RunStatus.PENDING]
        if not runs:
            self.console.notify(
                "select pending runs to dispatch (D dispatches all)", severity="warning"
            )
            return
        self.console.controller.dispatch([r.id for r in runs])

    def action_dispatch_all(self) -> None:
        self.console.controller.dispatch(None)

    def action_logs(self) -> None:
        runs = [r for r in self._runs() if r.run_dir]
        if not runs:
            self.console.notify("no log yet: the run has not been dispatched", severity="warning")
            return
        self.console.follow_logs(runs)

    def action_pull(self) -> None:
        runs = [r for r in self._runs() if r.run_dir]
        if not runs:
            self.console.notify("nothing to pull: the run never started", severity="warning")
            return
        self.console.controller.pull([r.id for r in runs])

    def action_status_filter(self) -> None:
        index = STATUS_FILTERS.index(self.status_filter)
        self.status_filter = STATUS_FILTERS[(index + 1) % len(STATUS_FILTERS)]
        self.show(self.state)

    def action_attach(self) -> None:
        run = self._one()
        if run is None or run.worker is None or run.worker not in self.state.workers:
            self.console.notify("the run has no worker yet", severity="warning")
            return
        self.console.controller.attach(self.state.workers[run.worker].worker, run)


def _negated(timestamp: str) -> tuple[int, ...]:
    """Sort key that puts later timestamps first."""
    return tuple(-ord(char) for char in timestamp)
