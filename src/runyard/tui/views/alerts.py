"""The Alerts view: the health patrol's findings, each with the action that fixes it."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from runyard.tui import format as fmt
from runyard.tui.format import cell
from runyard.tui.state import AlertLike, ConsoleState
from runyard.tui.views.base import TableView
from runyard.tui.widgets.fast_table import Column, FastTable, Row

ALERT_COLUMNS = (
    Column("severity", "SEVERITY", 8),
    Column("worker", "WORKER", 14),
    Column("kind", "KIND", 12),
    Column("since", "SINCE", 6, "right"),
    Column("message", "WHAT"),
    Column("fix", "FIX", 40),
)


def alert_row(alert: AlertLike, now: float) -> Row:
    critical = alert.severity == "critical"
    return Row(
        key=alert.id,
        cells=(
            cell(alert.severity.upper(), f"bold {fmt.BAD}" if critical else fmt.WARN),
            cell(alert.worker, "bold"),
            cell(alert.kind, fmt.MUTED),
            cell(fmt.age(alert.first_seen, now)),
            cell(alert.message),
            cell(alert.fix, fmt.ACCENT),
        ),
        sort_values=(0 if critical else 1, alert.worker, alert.kind),
    )


class AlertsView(TableView):
    """What needs attention, critical first; Enter goes to the worker or run concerned."""

    TITLE = "Alerts"
    NOUN = "alerts"
    COLUMNS = ALERT_COLUMNS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "go", "Go to"),
        Binding("P", "patrol", "Patrol now"),
    ]

    DEFAULT_CSS = """
    AlertsView > .detail { height: auto; max-height: 6; padding: 0 1; border-top: solid $panel; }
    """

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield Static("", classes="detail")

    def show(self, state: ConsoleState) -> None:
        now = self.console.clock()
        self.set_rows([alert_row(alert, now) for alert in state.alerts])
        self.show_detail()

    def show_detail(self) -> None:
        """The highlighted alert in full: what is wrong and the action that fixes it."""
        key = self.current_key()
        alert = next((a for a in self.state.alerts if a.id == key), None)
        text = (
            f"[b]{escape(alert.message)}[/]\nfix: [cyan]{escape(alert.fix)}[/]"
            if alert
            else "Nothing needs attention. The patrol checks disk bytes and inodes, GPUs that "
            "idle under a run, zombie VRAM, stale logs, reboots, OOM kills and Xid errors."
        )
        detail = self.query_one(".detail", Static)
        if getattr(detail, "shown_text", None) != text:
            detail.shown_text = text  # type: ignore[attr-defined]
            detail.update(text)

    def cursor_moved(self, key: str | None) -> None:
        super().cursor_moved(key)
        self.show_detail()

    def status_extra(self) -> str:
        when = self.console.last_patrol_text()
        return f"patrol {when} · Enter goes to the worker or run · P patrols now"

    def on_fast_table_activated(self, event: FastTable.Activated) -> None:
        event.stop()
        self.action_go()

    def action_go(self) -> None:
        key = self.current_key()
        alert = next((a for a in self.state.alerts if a.id == key), None)
        if alert is None:
            return
        if alert.run_id and self.state.run(alert.run_id):
            self.console.show_run(alert.run_id)
        else:
            self.console.show_worker(alert.worker)

    def action_patrol(self) -> None:
        self.console.controller.patrol()
        self.console.notify("patrolling the fleet…")
