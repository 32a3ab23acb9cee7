"""The run form: add a run, or edit a pending one (command, name, pool or worker, priority, env).

The form only turns text into a `RunSpec`; the core validates it (`run add`'s rules), and a
refusal comes back as a notice while the queue stays as it was.
"""

from __future__ import annotations

import shlex
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from runyard.core.errors import InputError
from runyard.core.runs import RunSpec, parse_env_assignments

FIELDS: tuple[tuple[str, str, str], ...] = (
    ("command", "Command", "python train.py --lr 0.01"),
    ("name", "Name", "unique; names the run's output folder (empty: derived)"),
    ("project", "Project", "optional"),
    ("pool", "Pool", "empty: the default pool"),
    ("worker", "Worker", "pin to one worker (optional)"),
    ("priority", "Priority", "0; higher dispatches first"),
    ("env", "Env", "K=V K2=V2 (quote values with spaces; ${secret:NAME} for secrets)"),
    ("outputs", "Outputs", "globs pulled besides the output folder, space-separated"),
)


def spec_from_fields(values: dict[str, str]) -> RunSpec:
    """Parse the form's text; raises `InputError` naming the field."""
    command = values.get("command", "").strip()
    if not command:
        raise InputError("command: must not be empty")
    priority_text = values.get("priority", "").strip() or "0"
    try:
        priority = int(priority_text)
    except ValueError:
        raise InputError(f"priority: {priority_text!r} is not a whole number") from None
    try:
        env_items = shlex.split(values.get("env", ""))
        outputs = shlex.split(values.get("outputs", ""))
    except ValueError as exc:
        raise InputError(f"env/outputs: {exc}") from None
    return RunSpec(
        command=command,
        name=values.get("name", "").strip() or None,
        project=values.get("project", "").strip() or None,
        pool=values.get("pool", "").strip() or None,
        worker=values.get("worker", "").strip() or None,
        priority=priority,
        env=parse_env_assignments(env_items),
        outputs=outputs,
    )


def fields_from_spec(spec: RunSpec) -> dict[str, str]:
    """The form's text for an existing run."""
    return {
        "command": spec.command,
        "name": spec.name or "",
        "project": spec.project or "",
        "pool": spec.pool or "",
        "worker": spec.worker or "",
        "priority": str(spec.priority),
        "env": " ".join(shlex.quote(f"{k}={v}") for k, v in spec.env.items()),
        "outputs": " ".join(shlex.quote(o) for o in spec.outputs),
    }


class RunFormModal(ModalScreen[RunSpec | None]):
    """Returns the parsed spec on save, None on cancel."""

    DEFAULT_CSS = """
    RunFormModal { align: center middle; }
    RunFormModal > Vertical {
        width: 90%; max-width: 100; height: auto; max-height: 95%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    RunFormModal VerticalScroll { height: auto; max-height: 30; }
    RunFormModal .row { height: 3; }
    RunFormModal .row Label { width: 10; padding: 1 1 0 0; }
    RunFormModal .row Input { width: 1fr; }
    RunFormModal .error { color: $error; height: auto; }
    RunFormModal .buttons { height: 3; align-horizontal: right; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, title: str, initial: RunSpec | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.initial = fields_from_spec(initial) if initial else {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"[b]{self.title_text}[/]  (Tab moves, Enter or Ctrl+S saves, Esc cancels)"
            )
            with VerticalScroll():
                for key, label, hint in FIELDS:
                    with Horizontal(classes="row"):
                        yield Label(label)
                        yield Input(self.initial.get(key, ""), placeholder=hint, id=f"field-{key}")
            yield Static("", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", variant="primary", id="save")

    def on_mount(self) -> None:
        self.query_one("#field-command", Input).focus()

    def values(self) -> dict[str, str]:
        return {key: self.query_one(f"#field-{key}", Input).value for key, _, _ in FIELDS}

    def action_save(self) -> None:
        try:
            spec = spec_from_fields(self.values())
        except InputError as exc:
            self.query_one(".error", Static).update(str(exc))
            return
        self.dismiss(spec)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()
