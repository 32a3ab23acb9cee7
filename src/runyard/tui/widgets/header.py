"""The one-line header: workspace, SIMULATED, workers and GPUs, runs by state, $/h, alerts."""

from __future__ import annotations

from rich.markup import escape

from runyard.tui.state import Summary
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


def header_markup(label: str, summary: Summary, *, simulated: bool, auto_dispatch: bool) -> str:
    """The header's text as Rich markup (pure)."""
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
