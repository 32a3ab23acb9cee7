"""Terminal charts: block-column area charts for GPU history, braille line charts for loss.

The plotting is pure (values in, rows of text out) and the widgets only size it and colour
it. Block and braille characters are plain Unicode, so the charts draw the same in tmux
with 256 colours as anywhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widget import Widget

EIGHTHS = " ▁▂▃▄▅▆▇█"
BRAILLE_BASE = 0x2800
# Braille dot bits by (column in cell, row in cell), rows top to bottom.
BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
SERIES_COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red")


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def area_rows(
    values: Sequence[float | None], width: int, height: int, lo: float, hi: float
) -> list[str]:
    """The last `width` values as filled columns, `height` rows of text, top row first."""
    tail: list[float | None] = [None] * max(0, width - len(values))
    tail += list(values)[-width:]
    span = hi - lo if hi > lo else 1.0
    levels = [
        0
        if v is None or not math.isfinite(v)
        else round(min(1.0, max(0.0, (v - lo) / span)) * height * 8)
        for v in tail
    ]
    rows: list[str] = []
    for row in range(height):
        floor = (height - 1 - row) * 8
        rows.append("".join(EIGHTHS[min(8, max(0, level - floor))] for level in levels))
    return rows


def resample(values: Sequence[float], points: int) -> list[float]:
    """`values` squeezed (bucket means) or kept as they are, to at most `points` points."""
    if len(values) <= points:
        return list(values)
    size = len(values) / points
    out: list[float] = []
    for i in range(points):
        bucket = values[int(i * size) : max(int(i * size) + 1, int((i + 1) * size))]
        out.append(sum(bucket) / len(bucket))
    return out


def braille_rows(
    series: Sequence[Sequence[float]], width: int, height: int, lo: float, hi: float
) -> list[list[tuple[str, int]]]:
    """Line plots of every series on one grid: rows of (character, series index or -1)."""
    dots = [[0] * width for _ in range(height)]
    owner = [[-1] * width for _ in range(height)]
    span = hi - lo if hi > lo else 1.0
    rows_of_dots = height * 4

    def y_of(value: float) -> int:
        ratio = min(1.0, max(0.0, (value - lo) / span))
        return (rows_of_dots - 1) - round(ratio * (rows_of_dots - 1))

    def plot(x: int, y: int, index: int) -> None:
        cell_x, cell_y = x // 2, y // 4
        if 0 <= cell_x < width and 0 <= cell_y < height:
            dots[cell_y][cell_x] |= BRAILLE_BITS[x % 2][y % 4]
            owner[cell_y][cell_x] = index

    for index, values in enumerate(series):
        points = resample(_finite(values), width * 2)
        stretch = (width * 2 - 1) / (len(points) - 1) if len(points) > 1 else 0.0
        previous: int | None = None
        previous_x = 0
        for position, value in enumerate(points):
            x = round(position * stretch)
            y = y_of(value)
            if previous is not None:
                # Fill the horizontal gap a stretched series leaves between two points.
                for gap_x in range(previous_x + 1, x):
                    plot(gap_x, previous, index)
            previous_x = x
            top, bottom = (y, y) if previous is None else (min(y, previous), max(y, previous))
            for fill in range(top, bottom + 1):
                plot(x, fill, index)
            previous = y
    return [
        [(chr(BRAILLE_BASE + dots[r][c]) if dots[r][c] else " ", owner[r][c]) for c in range(width)]
        for r in range(height)
    ]


def value_range(series: Sequence[Sequence[float | None]]) -> tuple[float, float]:
    values = [v for s in series for v in _finite(s)]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(hi) * 0.05 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def short_number(value: float) -> str:
    """A y-axis label in at most 6 characters."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10000:
        return f"{value:.3g}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if magnitude >= 0.001 else f"{value:.0e}"


class AreaChart(Widget):
    """One series as filled columns on a fixed scale (0-100 % or 0-limit)."""

    DEFAULT_CSS = """
    AreaChart { height: 5; width: 1fr; border: round $panel; padding: 0 0; }
    """

    def __init__(
        self, title: str, unit: str = "", colour: str = "green", *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.title = title
        self.unit = unit
        self.colour = colour
        self.values: list[float | None] = []
        self.hi = 100.0
        self.border_title = title

    def set_values(self, values: Sequence[float | None], hi: float | None = None) -> None:
        fresh = list(values)
        new_hi = hi if hi else self.hi
        if fresh == self.values and new_hi == self.hi:
            return
        self.values = fresh
        self.hi = new_hi
        last = next((v for v in reversed(fresh) if v is not None), None)
        current = "n/a" if last is None else f"{last:.0f}{self.unit}"
        self.border_title = f"{self.title} {current}"
        self.refresh()

    def render(self) -> Text:
        width = max(1, self.content_region.width)
        height = max(1, self.content_region.height)
        rows = area_rows(self.values, width, height, 0.0, self.hi)
        return Text("\n".join(rows), style=self.colour, no_wrap=True, overflow="crop")


class LineChart(Widget):
    """Several series as braille lines with a y-axis and a legend (live loss curves)."""

    DEFAULT_CSS = """
    LineChart { height: 1fr; width: 1fr; border: round $panel; }
    """
    AXIS_WIDTH = 7

    def __init__(self, title: str = "metrics", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.series: dict[str, list[float]] = {}
        self.border_title = title

    def set_series(self, series: Mapping[str, Sequence[float]]) -> None:
        self.series = {name: list(values) for name, values in series.items()}
        legend = "  ".join(
            f"[{SERIES_COLOURS[i % len(SERIES_COLOURS)]}]{name}[/] {values[-1]:.4g}"
            for i, (name, values) in enumerate(self.series.items())
            if values
        )
        self.border_subtitle = legend
        self.refresh()

    def render(self) -> Text:
        width = max(1, self.content_region.width - self.AXIS_WIDTH)
        height = max(1, self.content_region.height)
        text = Text(no_wrap=True, overflow="crop")
        if not any(self.series.values()):
            text.append("no metrics in the log yet (key=value pairs such as loss=0.42)", "dim")
            return text
        lo, hi = value_range(list(self.series.values()))
        grid = braille_rows(list(self.series.values()), width, height, lo, hi)
        for row_index, row in enumerate(grid):
            if row_index:
                text.append("\n")
            label = ""
            if row_index == 0:
                label = short_number(hi)
            elif row_index == height - 1:
                label = short_number(lo)
            text.append(label.rjust(self.AXIS_WIDTH - 1) + "┤", "bright_black")
            for char, owner in row:
                colour = SERIES_COLOURS[owner % len(SERIES_COLOURS)] if owner >= 0 else ""
                text.append(char, colour)
        return text
