"""Failures stay visible: the header counts unseen errors, `E` lists them, and a bug (an
exception that is not a RunyardError) leaves its traceback in `.runyard/console.log`."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from runyard.core.errors import InputError
from runyard.core.store.journal import append_journal
from runyard.core.workspace import Workspace
from runyard.tui.app import RunyardApp
from runyard.tui.widgets.header import ConsoleHeader, ErrorsModal

from .harness import console, settle, start

SIZE = (160, 45)
VAST_KEY = "vk-0123456789abcdef"


def header(app: RunyardApp) -> str:
    return app.query_one(ConsoleHeader).text


async def test_worker_failures_are_counted_listed_and_bugs_journaled(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    journal = workspace.state_dir / "console.log"
    app = console(workspace)

    async def refused() -> list[object]:
        raise InputError("queue says no")

    async def buggy() -> list[object]:
        raise ValueError(f"boom at https://api.example/?api_key={VAST_KEY}")

    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        assert "error" not in header(app)
        monkeypatch.setattr(app.services, "check", refused)
        app.controller.refresh_runs()
        await settle(pilot)
        assert "⚠ 1 error · E" in header(app)
        assert not journal.exists()  # an operational failure is not a bug: no traceback

        monkeypatch.setattr(app.services, "check", buggy)
        app.controller.refresh_runs()
        await settle(pilot)
        assert "⚠ 2 errors · E" in header(app)
        newest = app.controller.errors[-1].text
        assert newest.startswith("ValueError: boom") and f"traceback in {journal}" in newest
        assert VAST_KEY not in newest
        logged = journal.read_text(encoding="utf-8")
        assert "worker 'runs' raised ValueError" in logged
        assert "Traceback (most recent call last)" in logged and "in buggy" in logged
        assert "ValueError: boom" in logged and VAST_KEY not in logged

        await pilot.press("E")  # the list, newest first; opening it marks them seen
        assert isinstance(app.screen, ErrorsModal)
        listed = str(app.screen.query_one("#errors-list", Static).render())
        assert listed.index("ValueError: boom") < listed.index("queue says no")
        assert "2025-06-01" in listed  # each with its time (the test clock's day)
        assert "error" not in header(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, ErrorsModal)

        palette = [c.title for c in app.get_system_commands(app.screen)]
        assert "Errors: recent console errors" in palette


def test_the_journal_is_bounded(tmp_path: Path) -> None:
    journal = tmp_path / ".runyard" / "console.log"
    entry = 48  # bytes
    for index in range(8):
        append_journal(journal, f"entry {index} " + "x" * 40 + "\n", max_bytes=100)
    kept = journal.read_text()
    older = journal.with_name("console.log.1").read_text()
    assert "entry 7" in kept and "entry 5" in older
    assert "entry 0" not in kept + older  # the oldest generation is dropped
    assert len(kept) < 100 + entry and len(older) < 100 + entry
