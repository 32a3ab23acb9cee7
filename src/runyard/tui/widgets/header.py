"""The one-line header (workspace, SIMULATED, unseen errors, workers and GPUs, runs by state,
$/h, alerts) and the list of errors its `⚠ N errors · E` badge stands for."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from runyard.tui.state import ConsoleError, Summary
from runyard.tui.widgets.text_line import TextLine

STATE_COLOURS = {
    "running": "green",
    "dispatched": "cyan",
    "pending": "yellow",
    "failed": "red",
    "lost": "magenta",
    "done": "green",
    "cancelled": "bright_black",
}


def error_badge(unseen: int) -> str:
    """`⚠ 3 errors · E` until the operator opens the list; nothing when all were seen."""
    if not unseen:
        return ""
    return f"[b white on red] ⚠ {unseen} error{'' if unseen == 1 else 's'} · E [/]"


def header_markup(
    label: str, summary: Summary, *, simulated: bool, auto_dispatch: bool, errors: int = 0
) -> str:
    """The header's text as Rich markup (pure); `errors` is how many the operator has not
    seen (first after the label, so a narrow terminal still shows it)."""
    # Work in flight and what needs a look; done and cancelled runs are history.
    runs = " ".join(
        f"[{STATE_COLOURS.get(state, '')}]{count} {state}[/]"
        for state, count in summary.runs_by_status.items()
        if state not in ("done", "cancelled")
    )
    noun = "alert" if summary.alerts == 1 else "alerts"
    alerts = (
        f"[b red]{summary.alerts} {noun} ({summary.critical} critical)[/]"
        if summary.critical
        else (f"[yellow]{summary.alerts} {noun}[/]" if summary.alerts else "[green]no alerts[/]")
    )
    parts = [
        f"[b]runyard[/] {escape(label)}",
        *(["[b reverse yellow] SIMULATED [/]"] if simulated else []),
        *([error_badge(errors)] if errors else []),
        f"workers {summary.reachable}/{summary.enabled} up",
        f"GPUs {summary.gpus_busy}/{summary.gpus} busy",
        runs or "no runs in flight",
        f"[b]${summary.burn_dph:.2f}/h[/]"
        + (f" · ${summary.spent_today:.2f} today" if summary.spent_today else ""),
        alerts,
        f"auto-dispatch {'[b green]ON[/]' if auto_dispatch else 'off'}",
    ]
    return " │ ".join(parts)


class ConsoleHeader(TextLine):
    """Redraws only when its text changes (no full-width repaint on every tick)."""

    DEFAULT_CSS = """
    ConsoleHeader { height: 1; background: $panel; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__(id="header")


def errors_text(errors: Sequence[ConsoleError], journal: Path) -> str:
    """The errors list, newest first, one entry per failure with its local time (pure)."""
    if not errors:
        return "[green]No error since the console opened.[/]"
    lines = [
        f"[dim]{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.at))}[/]  {escape(e.text)}"
        for e in reversed(errors)
    ]
    return "\n".join(lines) + f"\n\n[dim]tracebacks of unexpected errors: {escape(str(journal))}[/]"


class ErrorsModal(ModalScreen[None]):
    """The console's recent failures, newest first (opening it marks them seen)."""

    DEFAULT_CSS = """
    ErrorsModal { align: center middle; }
    ErrorsModal > Vertical {
        width: 90%; height: 80%; border: thick $error; background: $surface; padding: 0 1;
    }
    ErrorsModal .title { height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,E", "close", "Close")]

    def __init__(self, errors: Sequence[ConsoleError], journal: Path) -> None:
        super().__init__()
        self.errors = list(errors)
        self.journal = journal

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"[b]Console errors[/] ({len(self.errors)}, newest first) — Esc closes",
                classes="title",
            )
            with VerticalScroll():
                yield Static(errors_text(self.errors, self.journal), id="errors-list")

    def action_close(self) -> None:
        self.dismiss(None)
