"""`TextLine`: a one-line Static that repaints only when its text changes, without a layout.

`Static.update` re-lays out the whole screen by default (about 40 ms with a 100-row table
on screen); a status line never changes size, so it must not.
"""

from __future__ import annotations

from textual.widgets import Static


class TextLine(Static):
    """A line of markup of fixed height; `show` is a no-op when the text is unchanged."""

    DEFAULT_CSS = """
    TextLine { height: 1; }
    """

    def __init__(
        self, text: str = "", *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(text, id=id, classes=classes)
        self.text = text

    def show(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.update(text, layout=False)
