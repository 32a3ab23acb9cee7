"""Small modals: a yes/no confirmation, and the key help generated from the bindings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmModal(ModalScreen[bool]):
    """'y' or Enter on Yes confirms; 'n' or Esc backs out."""

    DEFAULT_CSS = """
    ConfirmModal { align: center middle; }
    ConfirmModal > Vertical {
        width: 70; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmModal Horizontal { height: 3; align-horizontal: right; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(escape(self.question))
            with Horizontal():
                yield Button("No (n)", id="no")
                yield Button("Yes (y)", variant="warning", id="yes")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


def _key_name(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return " ".join(key.replace("_", " ") for key in binding.key.split(","))


def bindings_table(sections: Sequence[tuple[str, Iterable[BindingType]]]) -> str:
    """Help text: one section per view, one line per binding that has a description."""
    lines: list[str] = []
    for title, bindings in sections:
        lines.append(f"[b]{escape(title)}[/]")
        for binding in bindings:
            if isinstance(binding, Binding) and binding.description:
                lines.append(
                    f"  [cyan]{escape(_key_name(binding)):<16}[/] {escape(binding.description)}"
                )
        lines.append("")
    return "\n".join(lines)


class HelpModal(ModalScreen[None]):
    """Every key of every view."""

    DEFAULT_CSS = """
    HelpModal { align: center middle; }
    HelpModal > Vertical {
        width: 90; height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "[b]runyard keys[/] — every action is also in the command palette (Ctrl+P)"
            )
            with VerticalScroll():
                yield Static(self.text)

    def action_close(self) -> None:
        self.dismiss(None)
