"""The console's side of `.runyard/console.json`: what the operator set, kept across restarts.

`ConsoleMemoryKeeper` reads the file as the console opens, applies it to the views and the
controller, and writes it back when what it should hold changed (at most every
`SAVE_SECONDS`, and on exit). All file I/O is `core.store.console_memory`'s; this module only
decides when, and what to show the operator.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.core.models import Run, RunStatus
from runyard.core.store import console_memory
from runyard.core.store.console_memory import ConsoleMemory, TableMemory
from runyard.tui.views.runs import RunsView
from runyard.tui.views.vast import VastView
from runyard.tui.widgets.fast_table import FastTable

if TYPE_CHECKING:
    from runyard.tui.app import RunyardApp

SAVE_SECONDS = 1.0  # console.json is written at most this often (and on exit)


class ConsoleMemoryKeeper:
    """Loads, applies and saves console.json for one console, through `console_memory`."""

    def __init__(self, app: RunyardApp, state_dir: Path) -> None:
        self.app = app
        self.path = console_memory.memory_path(state_dir)
        # The operator's auto-dispatch choice, as saved or toggled (never the caller's).
        self.auto_dispatch_choice: bool | None = None
        self._loaded = console_memory.Loaded(ConsoleMemory())
        self._saved: ConsoleMemory | None = None  # what was last written (or loaded)
        self._bad = False  # the file on disk was refused: move it aside before writing
        self._problem: str | None = None  # the last save failure, reported once
        self._pending_follow: tuple[str, ...] = ()  # saved follows, until the queue is loaded
        self._tables: dict[str, FastTable] = {}

    def load(self) -> str | None:
        """Read console.json (as the console opens, so the saved view is the first shown);
        the saved view, which may name one that is gone."""
        self._loaded = console_memory.load(self.path)
        return self._loaded.memory.view

    def restore(self) -> None:
        """Apply what `load` read (on mount): tables, view filters, auto-dispatch, watcher; the
        followed logs wait for the queue. A bad file is reported once and left as it is."""
        app = self.app
        self._tables = {_table_key(t): t for t in app.query(FastTable) if t.id}
        loaded = self._loaded
        memory = loaded.memory
        if not loaded.ok:
            self._bad = True
            bad = console_memory.bad_path(self.path).name
            app.notify(
                f"ignored {self.path}: {loaded.problem}. The console opened with its "
                f"defaults; the file stays as it is until you change a setting, then it is "
                f"kept as {bad}.",
                severity="warning",
                timeout=20,
            )
        for key, saved in memory.tables.items():
            table = self._tables.get(key)
            if table is None:
                continue  # a table that is gone
            if saved.filter:
                table.set_filter(saved.filter)
            if saved.sort is None or any(c.key == saved.sort for c in table.columns):
                table.sort_by(saved.sort, saved.reverse)
        runs = app.views["runs"]
        if isinstance(runs, RunsView) and memory.runs_status in {s.value for s in RunStatus}:
            runs.status_filter = RunStatus(memory.runs_status)
        vast = app.views["vast"]
        if isinstance(vast, VastView):
            vast.query_text = memory.vast_query
        self.auto_dispatch_choice = memory.auto_dispatch
        explicit = app.explicit_auto_dispatch
        if explicit is None and app.controller.auto_dispatch:
            explicit = True  # switched on by the caller before the console opened
        app.controller.auto_dispatch = console_memory.resolve_auto_dispatch(
            memory.auto_dispatch, explicit
        )
        app.state.auto_dispatch = app.controller.auto_dispatch
        self._pending_follow = memory.followed
        if memory.vast_watcher:
            app.controller.vast_watch(True)
            app.notify("Vast watcher resumed (it was on when the console closed; w in Vast)")
        self._saved = self.snapshot()

    def snapshot(self) -> ConsoleMemory:
        """What console.json should hold now (reads attributes only: it also runs on exit,
        when the widgets are already off the screen)."""
        app = self.app
        tables = {
            key: TableMemory(table.filter_text, table.sort_column, table.sort_reverse)
            for key, table in self._tables.items()
        }
        runs = app.views["runs"]
        status = runs.status_filter if isinstance(runs, RunsView) else None
        vast = app.views["vast"]
        # Follows not resumed yet are still the operator's: keep them.
        followed = dict.fromkeys([*app.controller.followed, *self._pending_follow])
        return ConsoleMemory(
            view=app.shown_tab,
            tables={k: t for k, t in tables.items() if not t.is_default},
            runs_status=status.value if status is not None else None,
            vast_query=vast.query_text if isinstance(vast, VastView) else "",
            followed=tuple(followed),
            auto_dispatch=self.auto_dispatch_choice,
            vast_watcher=app.controller.vast_watch_wanted,
        )

    def save(self, final: bool = False) -> None:
        """Write console.json if what it should hold changed (the timer, and `final` on exit,
        when notices can no longer be shown)."""
        if self._saved is None:
            return  # not restored yet: never overwrite a file before it was read
        memory = self.snapshot()
        if memory == self._saved:
            return
        try:
            moved = console_memory.save(self.path, memory, keep_bad=self._bad)
        except OSError as exc:
            problem = f"cannot save {self.path}: {exc.strerror or exc}"
            if problem != self._problem and not final:
                self.app.controller.fail(problem)
            self._problem = problem
            return
        self._saved = memory
        self._bad = False
        self._problem = None
        if moved is not None and not final:
            self.app.notify(f"saved {self.path}; the file it refused is kept as {moved}")

    def follows_to_resume(self, runs: Iterable[Run]) -> list[Run]:
        """Once the queue is loaded (`runs`): the saved follows that still exist and have a
        log, to follow again; they are handed out once."""
        if not self._pending_follow:
            return []
        saved, self._pending_follow = self._pending_follow, ()
        return console_memory.follow_targets(saved, runs)


def _table_key(table: FastTable) -> str:
    """A table's name in console.json: the view's tab for a view's one table, else its id."""
    return (table.id or "").removesuffix("-view-table")
