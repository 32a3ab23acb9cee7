"""The teardown modal: what is on the worker, what is pulled, what it cost, what will be lost.

It shows the core's `TeardownPlan` and nothing else decides: while the plan has blockers
the name box is disabled and the modal says why; otherwise the action button enables only
when the worker's exact name is typed. The core checks the same gate again on execution.
"""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from runyard.core.teardown import RunResults, TeardownPlan
from runyard.tui import format as fmt


def _consequence_markup(line: str) -> str:
    colour = {
        "LOST": "red",
        "AT RISK": "yellow",
        "KEPT": "green",
        "STILL BILLS": "yellow",
        "DANGER": "bold red",
    }
    for prefix, style in colour.items():
        if line.startswith(prefix):
            return f"[{style}]{escape(prefix)}[/]{escape(line[len(prefix) :])}"
    return escape(line)


def _run_line(result: RunResults) -> str:
    if result.superseded:
        return (
            f"  [dim]{result.run_id} {escape(result.name)} — earlier attempt, retried elsewhere[/]"
        )
    if result.safe:
        return (
            f"  [green]✓[/] {result.run_id} {escape(result.name)} {result.status.value}, "
            f"pulled {result.pulled_at} ({result.files} files), verified"
        )
    return f"  [red]✗[/] {escape(result.problem or '')}"


def plan_markup(plan: TeardownPlan) -> str:
    """The modal's body as Rich markup (pure, so tests read it without a screen)."""
    irreversible = "[red b]irreversible[/]" if not plan.reversible else "reversible"
    lines = [
        f"[b]{plan.action.value.upper()} {escape(plan.worker)}[/] · platform {plan.platform} · "
        f"verb {plan.verb or 'none'} ({irreversible}) · meter stop: {escape(plan.meter_stop_verb)}"
        f"{' (irreversible)' if plan.meter_stop_irreversible else ''}",
        "",
        "[b]Cost so far[/]: "
        + (
            f"{fmt.money(plan.cost_so_far)} ({fmt.money(plan.price_dph)}/h × "  # noqa: RUF001
            f"{fmt.duration(plan.uptime_s)} up)"
            if plan.cost_so_far is not None
            else ("no price in workers.yaml" if plan.price_dph is None else "uptime unknown")
        ),
        "",
        f"[b]Runs on this worker[/] ({len(plan.runs)}):",
        *([_run_line(r) for r in plan.runs] or ["  none"]),
        "",
        "[b]What happens[/]:",
        *(f"  {_consequence_markup(line)}" for line in plan.consequences),
        *(f"  [yellow]DANGER[/] {escape(message)}" for message in plan.standing_dangers),
    ]
    return "\n".join(lines)


class TeardownModal(ModalScreen[str | None]):
    """Returns the typed name when the operator confirms, None when they back out."""

    DEFAULT_CSS = """
    TeardownModal { align: center middle; }
    TeardownModal > Vertical {
        width: 90%; max-width: 110; height: 90%; border: thick $error; background: $surface;
        padding: 0 1;
    }
    TeardownModal VerticalScroll { height: 1fr; }
    TeardownModal .verdict { height: auto; margin: 1 0 0 0; }
    TeardownModal .verdict.-refused { color: $error; text-style: bold; }
    TeardownModal Horizontal { height: 3; align-horizontal: right; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_modal", "Back")]

    def __init__(self, plan: TeardownPlan) -> None:
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        plan = self.plan
        with Vertical():
            with VerticalScroll():
                yield Static(plan_markup(plan), id="plan")
            if plan.allowed:
                verdict = (
                    f"Every result is pulled and verified. Type [b]{escape(plan.worker)}[/] "
                    f"to {plan.action.value} it."
                )
            else:
                verdict = "REFUSED: " + escape("; ".join(plan.blockers))
            yield Static(verdict, classes="verdict" + ("" if plan.allowed else " -refused"))
            yield Input(
                placeholder=f"type {plan.worker} to confirm" if plan.allowed else "refused",
                disabled=not plan.allowed,
                id="typed-name",
            )
            with Horizontal():
                yield Button("Back (Esc)", id="back")
                yield Button(
                    f"{plan.action.value.capitalize()} {plan.worker}",
                    variant="error",
                    disabled=True,
                    id="confirm",
                )

    def on_mount(self) -> None:
        if self.plan.allowed:
            self.query_one(Input).focus()
        else:
            self.query_one("#back", Button).focus()

    def _matches(self, value: str) -> bool:
        return self.plan.allowed and value == self.plan.worker

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = not self._matches(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._matches(event.value):
            self.dismiss(event.value)
        else:
            self.notify(f"type exactly {self.plan.worker!r}", severity="warning")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm" and self._matches(self.query_one(Input).value):
            self.dismiss(self.query_one(Input).value)
        else:
            self.dismiss(None)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
