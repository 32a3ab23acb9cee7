"""What every view shares: the state it draws from and, for table views, filter and status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input

from runyard.tui.state import ConsoleState
from runyard.tui.widgets.fast_table import Column, FastTable, Row
from runyard.tui.widgets.text_line import TextLine

if TYPE_CHECKING:
    from runyard.tui.app import RunyardApp


class ConsoleView(Vertical):
    """A view: redraws itself from `ConsoleState` when shown or when its data changed."""

    TITLE: ClassVar[str] = ""

    @property
    def console(self) -> RunyardApp:
        from runyard.tui.app import RunyardApp

        return cast(RunyardApp, self.app)

    @property
    def state(self) -> ConsoleState:
        return self.console.state

    def show(self, state: ConsoleState) -> None:
        """Draw `state`; called when the view is active and something it shows changed."""

    def focus_main(self) -> None:
        """Put the focus where the keys of this view act."""
        self.focus()


class TableView(ConsoleView):
    """A view made of a `FastTable`, a `/` filter box and a one-line status."""

    DEFAULT_CSS = """
    TableView > Input.filter { display: none; height: 3; }
    TableView > Input.filter.-shown { display: block; }
    TableView > .status { height: 1; color: $text-muted; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "close_filter", "Close filter", show=False),
    ]
    COLUMNS: ClassVar[Sequence[Column]] = ()
    NOUN: ClassVar[str] = "rows"

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter: words to match (Enter keeps it, Esc clears)", classes="filter"
        )
        yield FastTable(self.COLUMNS, on_highlight=self.cursor_moved, id=f"{self.id}-table")
        yield TextLine(classes="status")

    @property
    def table(self) -> FastTable:
        return self.query_one(FastTable)

    def focus_main(self) -> None:
        self.table.focus()

    def set_rows(self, rows: Sequence[Row]) -> None:
        self.table.set_rows(rows)
        self.update_status()

    def status_extra(self) -> str:
        """View-specific text after the position (sort, filters, timings)."""
        return ""

    def update_status(self) -> None:
        table = self.table
        position = f"{table.cursor_index + 1 if table.row_count else 0}/{table.row_count}"
        total = f" of {table.total_count}" if table.row_count != table.total_count else ""
        marked = f" · {len(table.marked)} marked" if table.marked else ""
        filtered = f" · filter “{table.filter_text}”" if table.filter_text else ""
        extra = self.status_extra()
        text = f"{position}{total} {self.NOUN}{marked}{filtered}{' · ' + extra if extra else ''}"
        self.query_one(".status", TextLine).show(text)

    def cursor_moved(self, key: str | None) -> None:
        """The table's cursor is on another row: redraw the status in the same frame."""
        self.update_status()

    def action_filter(self) -> None:
        box = self.query_one("Input.filter", Input)
        box.add_class("-shown")
        box.value = self.table.filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.has_class("filter"):
            event.stop()
            self.table.set_filter(event.value)
            self.update_status()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.has_class("filter"):
            event.stop()
            event.input.remove_class("-shown")
            self.table.focus()

    def action_close_filter(self) -> None:
        box = self.query_one("Input.filter", Input)
        if box.has_class("-shown"):
            box.value = ""
            box.remove_class("-shown")
            self.table.set_filter("")
            self.update_status()
            self.table.focus()

    def selected(self) -> list[str]:
        return self.table.selected_keys()

    def current_key(self) -> str | None:
        return self.table.cursor_key
