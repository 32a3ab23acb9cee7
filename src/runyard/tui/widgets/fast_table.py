"""`FastTable`: a keyboard table that redraws only the rows whose content changed.

Textual's DataTable re-measures and re-renders on every cell update (about 65 ms to touch
two cells in each of 100 rows on the development machine), which would put a fleet refresh
in the way of every key press. This widget follows the Line API, as toolong's log view
does: rows are plain tuples of (text, style) fragments, `set_rows` diffs them against what
is shown by value, only changed rows that are on screen are invalidated, and each visible
row is rendered once into a cached `Strip`. Sorting and filtering rebuild the row order
only; the cursor follows its row's key, not its position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Literal

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from runyard.tui.format import Cell, plain

Align = Literal["left", "right"]
GAP = 1  # blank cells between columns


@dataclass(frozen=True)
class Column:
    """A column: fixed `width` cells, or 0 for the one column that takes the rest."""

    key: str
    label: str
    width: int = 0
    align: Align = "left"


@dataclass(frozen=True)
class Row:
    """One row: its cells, the values it sorts by (one per column) and its row style."""

    key: str
    cells: tuple[Cell, ...]
    sort_values: tuple[Any, ...] = ()
    style: str = ""
    search_text: str = field(default="", compare=False)

    def matches(self, needle: str) -> bool:
        """Whether every word of `needle` occurs in the row (case-insensitive)."""
        haystack = self.search_text or " ".join(plain(c) for c in self.cells).lower()
        return all(word in haystack for word in needle.lower().split())


@lru_cache(maxsize=16384)
def fit(fragments: Cell, width: int, align: Align) -> tuple[Segment, ...]:
    """A cell's fragments cut or padded to exactly `width` cells (cached: a fleet's rows
    repeat most of their cells from one refresh to the next)."""
    segments: list[Segment] = []
    used = 0
    for text, style in fragments:
        if used >= width:
            break
        size = cell_len(text)
        if used + size > width:
            text = set_cell_size(text, width - used)
            size = width - used
        segments.append(Segment(text, Style.parse(style) if style else None))
        used += size
    if used < width:
        pad = Segment(" " * (width - used))
        if align == "right":
            segments.insert(0, pad)
        else:
            segments.append(pad)
    return tuple(segments)


class FastTable(ScrollView, can_focus=True):
    """A virtual table of `Row`s with a cursor, marks, sorting and a text filter."""

    DEFAULT_CSS = """
    FastTable {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    FastTable > .fast-table--header { text-style: bold; color: $text-accent; }
    FastTable > .fast-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    FastTable:blur > .fast-table--cursor { background: $block-cursor-blurred-background; }
    FastTable > .fast-table--marked { background: $primary 30%; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "fast-table--header",
        "fast-table--cursor",
        "fast-table--marked",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("enter", "activate", "Open", show=False),
    ]

    class Activated(Message):
        """Enter was pressed on a row."""

        def __init__(self, table: FastTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> FastTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        on_highlight: Callable[[str | None], None] | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        """`on_highlight` is called with the key under the cursor whenever it moves, right
        after the frame that shows the move: a status line far below the cursor row, redrawn
        in the same frame, would make Textual repaint every line in between."""
        super().__init__(id=id, classes=classes)
        self.columns = list(columns)
        self.on_highlight = on_highlight
        self._rows: dict[str, Row] = {}
        self._natural: list[str] = []  # keys in the order the view gave them
        self.order: list[str] = []  # keys shown, after filter and sort
        self._index: dict[str, int] = {}
        self.cursor_key: str | None = None
        self.marked: set[str] = set()
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._strips: dict[str, tuple[tuple[Any, ...], Strip]] = {}
        self._header: tuple[tuple[Any, ...], Strip] | None = None
        self._styles: dict[str, Style] = {}
        self.row_updates = 0  # rows re-rendered because their content changed (for tests)

    # ------------------------------------------------------------ data

    @property
    def row_count(self) -> int:
        return len(self.order)

    @property
    def total_count(self) -> int:
        return len(self._rows)

    @property
    def cursor_index(self) -> int:
        return self._index.get(self.cursor_key, 0) if self.cursor_key is not None else 0

    def row(self, key: str) -> Row | None:
        return self._rows.get(key)

    def set_rows(self, rows: Sequence[Row]) -> None:
        """Show `rows`; only rows whose value changed are re-rendered."""
        fresh = {row.key: row for row in rows}
        changed = [key for key, row in fresh.items() if self._rows.get(key) != row]
        natural = [row.key for row in rows]
        reorder = natural != self._natural or (
            self.sort_column is not None and any(self._sort_changed(k, fresh) for k in changed)
        )
        self._rows = fresh
        self._natural = natural
        self.marked &= fresh.keys()
        for key in changed:
            self._strips.pop(key, None)
        self.row_updates += len(changed)
        if reorder or self.filter_text:
            self._rebuild_order()
            return
        for key in changed:
            self._refresh_row(key)

    def _sort_changed(self, key: str, fresh: dict[str, Row]) -> bool:
        old = self._rows.get(key)
        index = self._column_index(self.sort_column)
        if old is None or index is None:
            return True
        new_values, old_values = fresh[key].sort_values, old.sort_values
        return new_values[index : index + 1] != old_values[index : index + 1]

    def _column_index(self, key: str | None) -> int | None:
        return next((i for i, c in enumerate(self.columns) if c.key == key), None)

    def _rebuild_order(self) -> None:
        previous = list(self.order)
        keys = self._natural
        if self.filter_text:
            keys = [k for k in keys if self._rows[k].matches(self.filter_text)]
        index = self._column_index(self.sort_column)
        if index is not None:
            # Rows without a value (an unreachable worker's util) go last either way.
            valued = [k for k in keys if _value_at(self._rows[k].sort_values, index) is not None]
            missing = [k for k in keys if _value_at(self._rows[k].sort_values, index) is None]
            valued.sort(
                key=lambda k: _value_at(self._rows[k].sort_values, index),
                reverse=self.sort_reverse,
            )
            keys = valued + missing
        self.order = keys
        self._index = {key: i for i, key in enumerate(keys)}
        if self.cursor_key not in self._index:
            old = self._index_before(previous)
            self.cursor_key = keys[min(old, len(keys) - 1)] if keys else None
            self._announce()
        self.virtual_size = Size(self.size.width, len(keys) + 1)
        if keys != previous:
            self.refresh()
        self._scroll_to_cursor()

    def _index_before(self, previous: list[str]) -> int:
        if self.cursor_key is None:
            return 0
        try:
            return previous.index(self.cursor_key)
        except ValueError:
            return 0

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._rebuild_order()

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column = column
        self.sort_reverse = reverse
        self._header = None
        self._rebuild_order()
        self.refresh()

    # ------------------------------------------------------------ cursor

    def move_cursor(self, key: str | None) -> None:
        if key == self.cursor_key or (key is not None and key not in self._index):
            return
        old = self.cursor_key
        self.cursor_key = key
        if old is not None:
            self._refresh_row(old)
        if key is not None:
            self._refresh_row(key)
        self._scroll_to_cursor()
        self._announce()

    def _announce(self) -> None:
        if self.on_highlight is not None:
            self.call_after_refresh(self._highlighted)

    def _highlighted(self) -> None:
        if self.on_highlight is not None:
            self.on_highlight(self.cursor_key)

    def _scroll_to_cursor(self) -> None:
        """Keep the cursor row on screen, scrolling by half a page when it leaves it.

        Any scroll repaints every visible row (and resends them over the link); a half-page
        jump does that once per half page of cursor moves instead of on every move."""
        if self.cursor_key is None or self.cursor_key not in self._index:
            return
        index = self._index[self.cursor_key]
        visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if top <= index < top + visible:
            return
        step = max(1, visible // 2)
        if index < top:
            target = index - step + 1 if index >= top - step else index
        else:
            target = index - visible + step if index < top + visible + step else index - visible + 1
        last_top = max(0, len(self.order) - visible)
        self.scroll_to(y=min(last_top, max(0, target)), animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        if not self.order:
            return
        index = min(len(self.order) - 1, max(0, self.cursor_index + delta))
        self.move_cursor(self.order[index])

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        if self.order:
            self.move_cursor(self.order[-1 if end else 0])

    def action_mark(self) -> None:
        key = self.cursor_key
        if key is None:
            return
        self.marked.symmetric_difference_update({key})
        self._refresh_row(key)
        self.action_cursor(1)

    def action_activate(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.Activated(self, self.cursor_key))

    def selected_keys(self) -> list[str]:
        """The marked rows in display order, else the row under the cursor."""
        if self.marked:
            return [key for key in self.order if key in self.marked]
        return [self.cursor_key] if self.cursor_key is not None else []

    # ------------------------------------------------------------ rendering

    def _refresh_row(self, key: str) -> None:
        index = self._index.get(key)
        if index is None:
            return
        self._strips.pop(key, None)
        y = index + 1 - int(self.scroll_y)
        if 1 <= y < self.size.height:
            self.refresh_line(index + 1)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()
        self._header = None

    def _style(self, component: str) -> Style:
        style = self._styles.get(component)
        if style is None:
            style = self.get_component_rich_style(component, partial=True)
            self._styles[component] = style
        return style

    def _widths(self, width: int) -> list[int]:
        fixed = sum(c.width for c in self.columns if c.width) + GAP * (len(self.columns) - 1)
        flexible = max(4, width - fixed - 1)
        return [c.width or flexible for c in self.columns]

    def _line(self, cells: Sequence[Cell], widths: list[int], base: Style | None) -> list[Segment]:
        segments: list[Segment] = [Segment(" ")]
        for index, (column, content, width) in enumerate(
            zip(self.columns, cells, widths, strict=False)
        ):
            if index:
                segments.append(Segment(" " * GAP))
            segments.extend(fit(content, width, column.align))
        if base is not None:
            segments = list(Segment.apply_style(segments, post_style=base))
        # One escape sequence per run of equal style: less to send over a slow link.
        return list(Segment.simplify(segments))

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self._header_strip(width)
        index = int(self.scroll_y) + y - 1
        if index >= len(self.order):
            return Strip.blank(width)
        key = self.order[index]
        row = self._rows[key]
        focused = self.has_focus
        state = (width, key == self.cursor_key, key in self.marked, focused)
        cached = self._strips.get(key)
        if cached is not None and cached[0] == state:
            return cached[1]
        base: Style | None = Style.parse(row.style) if row.style else None
        if key == self.cursor_key:
            base = (base or Style()) + self._style("fast-table--cursor")
        elif key in self.marked:
            base = (base or Style()) + self._style("fast-table--marked")
        strip = Strip(self._line(row.cells, self._widths(width), base)).crop_extend(0, width, base)
        self._strips[key] = (state, strip)
        return strip

    def _header_strip(self, width: int) -> Strip:
        state = (width, self.sort_column, self.sort_reverse)
        if self._header is not None and self._header[0] == state:
            return self._header[1]
        labels: list[Cell] = []
        for column in self.columns:
            arrow = ""
            if column.key == self.sort_column:
                arrow = "▼" if self.sort_reverse else "▲"
            labels.append(((column.label + arrow, ""),))
        style = self._style("fast-table--header")
        strip = Strip(self._line(labels, self._widths(width), style)).crop_extend(0, width, style)
        self._header = (state, strip)
        return strip

    def on_resize(self) -> None:
        self._strips.clear()
        self._header = None
        self.virtual_size = Size(self.size.width, len(self.order) + 1)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


def _value_at(values: tuple[Any, ...], index: int) -> Any:
    return values[index] if index < len(values) else None
