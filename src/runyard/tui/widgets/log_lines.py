"""`LogLines`: a bounded, line-virtual log view that follows the end, pauses and searches.

Lines live in a deque of at most `max_lines`; the oldest fall off as new ones arrive, so
memory is bounded however long a run prints. Only visible lines are rendered, each once
into a cached `Strip` (the Line API, as in toolong). New lines arrive in batches (the
controller coalesces a follower's reads), and a batch costs one refresh. While paused the
view stays where it is: new lines are counted, not shown, until it resumes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from typing import ClassVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

DEFAULT_MAX_LINES = 5000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;?]*[A-Za-z]")


class LogLines(ScrollView, can_focus=True):
    """The lines of one followed log."""

    DEFAULT_CSS = """
    LogLines { height: 1fr; background: $surface; scrollbar-size-vertical: 1; }
    LogLines > .log-lines--match { background: $warning 40%; text-style: bold; }
    LogLines > .log-lines--current { background: $accent; color: $text; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"log-lines--match", "log-lines--current"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "scroll_lines(-1)", "Up", show=False),
        Binding("down,j", "scroll_lines(1)", "Down", show=False),
        Binding("pageup", "scroll_lines(-20)", "Page up", show=False),
        Binding("pagedown", "scroll_lines(20)", "Page down", show=False),
        Binding("home", "to_start", "Start", show=False),
    ]

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.first_number = 0  # the log line number of lines[0]
        self.following = True
        self.pending: deque[str] = deque(maxlen=max_lines)
        self.pending_count = 0
        self.search: str = ""
        self.matches: list[int] = []  # absolute line numbers
        self.match_index = -1
        self._match_numbers: set[int] = set()
        self._cache: dict[int, tuple[int, Strip]] = {}
        self._width = 0

    # ------------------------------------------------------------ content

    def append(self, lines: Sequence[str]) -> None:
        """Add a batch of lines (shown now, or counted while paused)."""
        if not lines:
            return
        if not self.following:
            self.pending.extend(lines)
            self.pending_count += len(lines)
            return
        self._show(lines)

    def _show(self, lines: Sequence[str]) -> None:
        lines = lines[-(self.lines.maxlen or len(lines)) :]  # older ones would fall off anyway
        overflow = max(0, len(self.lines) + len(lines) - (self.lines.maxlen or 0))
        self.lines.extend(line if line.isprintable() else _CONTROL.sub("", line) for line in lines)
        if overflow:
            self.first_number += overflow
            self._cache.clear()
        self._width = max(self._width, min(1000, max(len(line) for line in lines)))
        self.virtual_size = Size(self._width, len(self.lines))
        if self.following:
            self.follow_end()
        self.refresh()

    def follow_end(self) -> None:
        """Show the newest line from now on: anchored, every layout scrolls to the end, so
        the view never shows a stale position between a batch and the next layout."""
        self.anchor()

    def on_mount(self) -> None:
        if self.following:
            self.follow_end()

    def on_resize(self) -> None:
        self._cache.clear()

    def set_following(self, following: bool) -> None:
        """Resume (showing what arrived meanwhile and jumping to the end) or pause."""
        if following == self.following:
            return
        self.following = following
        if not following:
            self.anchor(False)
        else:
            backlog = list(self.pending)
            self.pending.clear()
            self.pending_count = 0
            if backlog:
                self._show(backlog)
            self.follow_end()

    # ------------------------------------------------------------ search

    def find(self, needle: str) -> int:
        """Highlight every line containing `needle`; returns how many match."""
        self.search = needle
        lowered = needle.lower()
        self.matches = (
            [self.first_number + i for i, line in enumerate(self.lines) if lowered in line.lower()]
            if needle
            else []
        )
        self._match_numbers = set(self.matches)
        self.match_index = len(self.matches) - 1 if self.matches else -1
        self._cache.clear()
        self._goto_match()
        self.refresh()
        return len(self.matches)

    def next_match(self, step: int) -> None:
        if not self.matches:
            return
        self.match_index = (self.match_index + step) % len(self.matches)
        self._cache.clear()
        self._goto_match()
        self.refresh()

    def _goto_match(self) -> None:
        if self.match_index < 0:
            return
        index = self.matches[self.match_index] - self.first_number
        if index >= 0:
            self.scroll_to(y=max(0, index - self.size.height // 2), animate=False, immediate=True)

    # ------------------------------------------------------------ scrolling

    def action_scroll_lines(self, delta: int) -> None:
        self.scroll_to(y=max(0, self.scroll_y + delta), animate=False, immediate=True)

    def action_to_start(self) -> None:
        self.scroll_to(y=0, animate=False, immediate=True)

    # ------------------------------------------------------------ rendering

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        if index >= len(self.lines):
            return Strip.blank(width)
        number = self.first_number + index
        cached = self._cache.get(number)
        if cached is not None and cached[0] == width:
            strip = cached[1]
        else:
            strip = _plain_strip(self.lines[index], self.app.console)
            strip = self._highlight(strip, number)
            self._cache[number] = (width, strip)
            if len(self._cache) > 4 * max(1, self.size.height):
                self._cache.pop(next(iter(self._cache)))
        return strip.crop_extend(scroll_x, scroll_x + width, None)

    def _highlight(self, strip: Strip, number: int) -> Strip:
        if not self.search or number not in self._match_numbers:
            return strip
        current = self.match_index >= 0 and self.matches[self.match_index] == number
        component = "log-lines--current" if current else "log-lines--match"
        style: Style = self.get_component_rich_style(component)
        return strip.apply_style(style)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()


def _plain_strip(line: str, console: Console) -> Strip:
    """A log line as a strip: ASCII without tabs (nearly every training log line) is one
    segment as wide as it is long; anything else goes through Rich for cell widths and tabs."""
    if line.isascii() and "\t" not in line:
        return Strip([Segment(line)], len(line))
    return Strip(Text(line, no_wrap=True).render(console))
