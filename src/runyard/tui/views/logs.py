"""The Logs view: one pane per followed run, its live log beside a live chart of its metrics."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.await_remove import AwaitRemove
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Static

from runyard.core.log_follow import LogChunk
from runyard.core.models import Run
from runyard.tui import format as fmt
from runyard.tui.state import ConsoleState
from runyard.tui.views.base import ConsoleView
from runyard.tui.widgets.charts import LineChart
from runyard.tui.widgets.log_lines import LogLines
from runyard.tui.widgets.text_line import TextLine

SERIES_POINTS = 2000
RATE_WINDOW_S = 3.0
CHART_INTERVAL_S = 1.0  # a loss curve redrawn once a second is live enough
CHART_SERIES = 3
SKIPPED_AXES = ("epoch", "step", "iter", "iteration", "lr")


def chart_keys(keys: Sequence[str], limit: int = CHART_SERIES) -> list[str]:
    """The metrics worth a curve: losses if there are any, else accuracies and scores."""
    losses = [k for k in keys if "loss" in k.lower()]
    if losses:
        return losses[:limit]
    return [k for k in keys if k.lower() not in SKIPPED_AXES][:limit]


class LineRate:
    """Lines per second over the last few seconds."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> float:
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        first_time, first_total = self.samples[0]
        span = now - first_time
        return (total - first_total) / span if span > 0 else 0.0


class LogPane(Vertical):
    """One followed run: header, log lines, metrics chart and a search box."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; border: round $panel; }
    LogPane:focus-within { border: round $accent; }
    LogPane > .pane-header { height: 1; padding: 0 1; background: $boost; }
    LogPane > Horizontal { height: 1fr; }
    LogPane LogLines { width: 3fr; }
    LogPane LineChart { width: 2fr; min-width: 30; }
    LogPane > Input { display: none; height: 3; }
    LogPane > Input.-shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause/resume"),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match(1)", "Next"),
        Binding("N", "next_match(-1)", "Prev", show=False),
        Binding("G,end", "jump_end", "End"),
        Binding("x", "close", "Close"),
        Binding("escape", "close_search", "Close search", show=False),
    ]

    def __init__(self, run: Run, *, max_lines: int) -> None:
        super().__init__(id=f"pane-{run.id}")
        self.run_id = run.id
        self.run_name = run.name
        self.worker = run.worker or "?"
        self.max_lines = max_lines
        self.total_lines = 0
        self.skipped_bytes = 0
        self.rate = 0.0
        self.rates = LineRate()
        self.stopped: str | None = None
        self.series: dict[str, deque[float]] = {}
        self.chart_drawn_at = float("-inf")
        self.chart_stale = False
        self.incoming: deque[str] = deque(maxlen=max_lines)  # received, not drawn yet
        self.header_stale = True
        self.composed = False  # the view's clock may tick while this pane is being mounted
        self.closing = False  # ... or while it is being removed, its children first

    def compose(self) -> ComposeResult:
        yield TextLine(classes="pane-header")
        with Horizontal():
            yield LogLines(self.max_lines)
            yield LineChart("metrics from the log")
        yield Input(placeholder="search the log (Enter), n / N for next / previous")

    def on_mount(self) -> None:
        self.composed = True
        self.update_header()

    @property
    def log_lines(self) -> LogLines:
        return self.query_one(LogLines)

    def receive(self, chunk: LogChunk, now: float) -> None:
        """Take one read's lines and metrics; nothing is drawn until `draw`."""
        self.total_lines = chunk.first_line_number + len(chunk.lines)
        self.skipped_bytes += chunk.skipped_bytes
        self.rate = self.rates.add(now, self.total_lines)
        self.incoming.extend(chunk.lines)
        for _, values in chunk.metrics:
            for key, value in values.items():
                self.series.setdefault(key, deque(maxlen=SERIES_POINTS)).append(value)
        self.chart_stale = self.chart_stale or bool(chunk.metrics)
        self.header_stale = True
        if chunk.ended:
            self.chart_drawn_at = float("-inf")  # the last point goes up with the last lines

    def draw(self, now: float) -> None:
        """Show what arrived since the last draw: lines now, the chart once a second."""
        if not self.composed or self.closing:
            return
        if self.incoming:
            self.log_lines.append(list(self.incoming))
            self.incoming.clear()
        if self.chart_stale and now - self.chart_drawn_at >= CHART_INTERVAL_S:
            self.chart_drawn_at = now
            self.chart_stale = False
            keys = chart_keys(list(self.series))
            self.query_one(LineChart).set_series({k: list(self.series[k]) for k in keys})
        if self.header_stale:
            self.header_stale = False
            self.update_header()

    def set_stopped(self, reason: str) -> None:
        self.stopped = reason
        self.header_stale = True

    def update_header(self) -> None:
        log = self.log_lines
        if self.stopped:
            mode = f"[b]{self.stopped}[/]"
        elif log.following:
            mode = "[green]following[/]"
        else:
            mode = f"[yellow b]PAUSED[/] +{log.pending_count} new"
        parts = [
            f"[b]{self.run_name}[/] ({self.run_id}) on {self.worker}",
            f"{fmt.human_count(self.total_lines)} lines",
            f"{fmt.human_count(self.rate)}/s",
            mode,
        ]
        if self.skipped_bytes:
            parts.append(f"[yellow]{fmt.human_bytes(self.skipped_bytes)} skipped (too fast)[/]")
        if log.search:
            position = log.match_index + 1 if log.matches else 0
            parts.append(f"/{log.search} {position}/{len(log.matches)}")
        self.query_one(".pane-header", TextLine).show(" · ".join(parts))

    def action_pause(self) -> None:
        self.log_lines.set_following(not self.log_lines.following)
        self.update_header()

    def action_jump_end(self) -> None:
        self.log_lines.set_following(True)
        self.log_lines.scroll_end(animate=False, immediate=True)
        self.update_header()

    def action_search(self) -> None:
        box = self.query_one(Input)
        box.add_class("-shown")
        box.value = self.log_lines.search
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        event.input.remove_class("-shown")
        self.log_lines.set_following(False)  # a search holds the view still
        found = self.log_lines.find(event.value)
        self.log_lines.focus()
        self.update_header()
        if event.value and not found:
            self.app.notify(f"“{event.value}” is not in the last {len(self.log_lines.lines)} lines")

    def action_close_search(self) -> None:
        box = self.query_one(Input)
        if box.has_class("-shown"):
            box.remove_class("-shown")
            self.log_lines.focus()

    def action_next_match(self, step: int) -> None:
        self.log_lines.next_match(step)
        self.update_header()

    def action_close(self) -> None:
        view = next((a for a in self.ancestors if isinstance(a, LogsView)), None)
        if view is not None:
            view.close_pane(self.run_id)


class LogsView(ConsoleView):
    """Every followed run, stacked; the focused pane takes the keys.

    Reads arrive whenever each follower's poll returns; they are only stored. The view's
    clock draws the panes in turns, `STAGGER` groups per `DRAW_INTERVAL_S`, and only while
    the view is on screen: every pane is drawn four times a second, but no frame pays for
    all of them at once (a key pressed then would wait for every pane and chart).
    """

    TITLE = "Logs"
    DEFAULT_CSS = """
    LogsView > .empty { padding: 1 2; color: $text-muted; }
    """
    MAX_LINES = 5000
    DRAW_INTERVAL_S = 0.25
    STAGGER = 4
    _tick = 0

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._removals: dict[str, AwaitRemove] = {}  # panes closed, not yet gone

    def on_mount(self) -> None:
        self.set_interval(self.DRAW_INTERVAL_S / self.STAGGER, self.draw)

    def draw(self, everything: bool = False) -> None:
        """Draw this tick's group of panes (pane i on ticks i, i + STAGGER, ...), or all."""
        if self.console.active_tab != "logs":
            return
        now = time.monotonic()
        self._tick = (self._tick + 1) % self.STAGGER
        for index, pane in enumerate(self.panes()):
            if everything or index % self.STAGGER == self._tick:
                pane.draw(now)

    def compose(self) -> ComposeResult:
        yield Static(
            "No log followed yet. In Runs (2), mark runs with space and press l, "
            "or press l on one run.",
            classes="empty",
        )

    def panes(self) -> list[LogPane]:
        """The panes on screen, not those being removed."""
        return [pane for pane in self.query(LogPane) if not pane.closing]

    def pane(self, run_id: str) -> LogPane | None:
        return next((p for p in self.panes() if p.run_id == run_id), None)

    async def open_panes(self, runs: Sequence[Run]) -> list[Run]:
        """Add a pane per run not yet followed; returns the runs that got one."""
        added = [run for run in runs if self.pane(run.id) is None]
        for run in added:  # a pane closed just now still holds its id until it is gone
            removal = self._removals.pop(run.id, None)
            if removal is not None:
                await removal
        if added:
            self.query_one(".empty").display = False
            await self.mount_all([LogPane(run, max_lines=self.MAX_LINES) for run in added])
        return added

    def close_pane(self, run_id: str) -> None:
        pane = self.pane(run_id)
        if pane is None:
            return
        self.console.controller.unfollow(run_id)
        pane.closing = True
        self._removals[run_id] = pane.remove()
        remaining = self.panes()
        if remaining:
            remaining[0].log_lines.focus()
        else:
            self.query_one(".empty").display = True

    def add_batch(self, run_id: str, chunk: LogChunk) -> None:
        pane = self.pane(run_id)
        if pane is not None:
            pane.receive(chunk, time.monotonic())

    def follow_stopped(self, run_id: str, reason: str) -> None:
        pane = self.pane(run_id)
        if pane is not None:
            pane.set_stopped(reason)
            if self.console.active_tab == "logs":
                pane.draw(time.monotonic())  # the last lines and the last point, now

    def focus_main(self) -> None:
        panes = self.panes()
        if panes:
            panes[-1].log_lines.focus()
        else:
            self.focus()

    def show(self, state: ConsoleState) -> None:
        """Logs arrive through `add_batch`; on becoming visible, draw what came meanwhile."""
        self.draw(everything=True)
