"""Plain-text formatting for the console: sizes, ages, money, bars and sparklines.

Everything returns strings or `Fragment` tuples (text, style) so table rows compare
cheaply and render without building Rich objects. Styles use the 16 ANSI colour names,
which look the same in a 256-colour tmux pane as in a truecolour terminal.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import islice

Fragment = tuple[str, str]  # (text, Rich style string)
Cell = tuple[Fragment, ...]

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
_SPARK_COUNT = len(SPARK_LEVELS)
BAR_FULL = "█"
BAR_EMPTY = "·"
MISSING = "–"  # noqa: RUF001 (an en dash reads as "no value")

GOOD, WARN, BAD, MUTED, ACCENT = "green", "yellow", "red", "bright_black", "cyan"


def cell(text: str, style: str = "") -> Cell:
    """A one-fragment cell."""
    return ((text, style),)


def level_style(pct: float | None, warn: float = 75.0, bad: float = 90.0) -> str:
    """Green / yellow / red by how full something is."""
    if pct is None:
        return MUTED
    if pct >= bad:
        return BAD
    if pct >= warn:
        return WARN
    return GOOD


def load_style(pct: float | None) -> str:
    """For utilisation, where high is good: busy green, idle muted."""
    if pct is None:
        return MUTED
    return GOOD if pct >= 50 else (WARN if pct >= 5 else MUTED)


def spark_char(value: float | None, lo: float = 0.0, hi: float = 100.0) -> str:
    """One block character for `value` on [lo, hi]; a blank where there is no value.

    Called for every GPU and trend point of every fleet row on each refresh: kept cheap."""
    if value is None or value != value:  # None or NaN
        return " "
    if hi <= lo:
        return SPARK_LEVELS[0]
    level = int((value - lo) / (hi - lo) * _SPARK_COUNT)
    return SPARK_LEVELS[0 if level < 0 else (level if level < _SPARK_COUNT else _SPARK_COUNT - 1)]


def sparkline(
    values: Sequence[float | None] | deque[float | None],
    width: int,
    lo: float = 0.0,
    hi: float = 100.0,
) -> str:
    """The last `width` values as block characters, right-aligned."""
    tail = list(islice(values, max(0, len(values) - width), None))
    return (" " * (width - len(tail))) + "".join(spark_char(v, lo, hi) for v in tail)


def bar(pct: float | None, width: int, style: str | None = None) -> Cell:
    """A horizontal bar of `width` cells for a percentage."""
    if pct is None:
        return ((MISSING.ljust(width), MUTED),)
    filled = min(width, max(0, round(pct / 100.0 * width)))
    colour = style if style is not None else level_style(pct)
    return ((BAR_FULL * filled, colour), (BAR_EMPTY * (width - filled), MUTED))


def human_bytes(value: float | None) -> str:
    """1536 -> '1.5K', binary units, three significant figures."""
    if value is None:
        return MISSING
    for unit in ("B", "K", "M", "G", "T", "P"):
        if abs(value) < 1024 or unit == "P":
            return f"{value:.0f}{unit}" if unit == "B" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024.0
    return MISSING  # unreachable


def human_count(value: float | None) -> str:
    """12345 -> '12.3k'."""
    if value is None:
        return MISSING
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def mib(value: float | None) -> str:
    """GPU memory in MiB as GiB text."""
    return MISSING if value is None else f"{value / 1024:.0f}G"


def money(dph: float | None) -> str:
    return MISSING if dph is None else f"${dph:.2f}"


def duration(seconds: float | None) -> str:
    """A compact age: 42s, 7m, 3h05, 2d4h."""
    if seconds is None or seconds < 0 or math.isinf(seconds):
        return MISSING
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


def parse_utc(timestamp: str | None) -> float | None:
    """The workspace's `YYYY-MM-DDTHH:MM:SSZ` timestamps as epoch seconds."""
    if not timestamp:
        return None
    try:
        return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def age(timestamp: str | None, now: float | None = None) -> str:
    then = parse_utc(timestamp)
    if then is None:
        return MISSING
    return duration((time.time() if now is None else now) - then)


def metric_text(metrics: dict[str, float], limit: int = 3) -> str:
    """The last few metrics, losses first: 'val_loss=0.365 train_loss=0.370'."""
    keys = list(metrics)
    preferred = [k for k in keys if "loss" in k or "acc" in k]
    chosen = (preferred + [k for k in keys if k not in preferred])[:limit]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in chosen)


def join_cells(parts: Iterable[Cell], sep: str = " ") -> Cell:
    """Concatenate cells with a plain separator."""
    out: list[Fragment] = []
    for index, part in enumerate(parts):
        if index and sep:
            out.append((sep, ""))
        out.extend(part)
    return tuple(out)


def plain(cell_value: Cell) -> str:
    """The text of a cell without styles."""
    return "".join(text for text, _ in cell_value)
