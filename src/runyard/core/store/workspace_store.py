"""`WorkspaceStore`: every read and write of a workspace's files goes through here.

Reads need no lock (writers replace files atomically). Read-modify-write sequences run
inside `queue_transaction()` or `edit_workers()`, which hold the workspace lock.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runyard.core.models import FieldError, Run, Worker
from runyard.core.settings import Settings, SettingWarning, parse_settings
from runyard.core.store.documents import load_yaml, yaml_field_error, yaml_line
from runyard.core.store.events import EventLog
from runyard.core.store.lock import WorkspaceLock
from runyard.core.store.queue_file import load_queue, load_queue_raw, parse_queue, save_records
from runyard.core.store.workers_file import edit_workers, load_workers
from runyard.core.workspace import Workspace


class WorkspaceStore:
    """Typed access to one workspace's settings, workers, queue and events."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.lock = WorkspaceLock(workspace.lock_path)
        self.events = EventLog(workspace.events_path)
        self.warnings: list[str] = []
        self._settings: Settings | None = None
        self.__parsed_workers: tuple[tuple[int, int, int] | None, list[Worker]] | None = None

    # ------------------------------------------------------------ settings

    def settings(self) -> Settings:
        if self._settings is None:
            path = self.workspace.settings_path
            doc = load_yaml(path) if path.exists() else None
            found: list[str] = []
            try:
                self._settings = parse_settings(doc, found)
            except FieldError as exc:
                raise yaml_field_error(path, doc, exc) from None
            for warning in found:
                line = yaml_line(doc, warning.path) if isinstance(warning, SettingWarning) else None
                self.warnings.append(f"{path}:{line}: {warning}" if line else f"{path}: {warning}")
        return self._settings

    # ------------------------------------------------------------ workers

    def workers(self) -> list[Worker]:
        """The workers, parsed once per version of workers.yaml (a round-trip parse of a
        100-worker file costs ~0.2 s, and the console and most verbs ask several times).
        Callers get copies, so editing one never changes the cache."""
        path = self.workspace.workers_path
        try:
            info = path.stat()
            stamp: tuple[int, int, int] | None = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stamp = None
        if self.__parsed_workers is None or self.__parsed_workers[0] != stamp:
            self.__parsed_workers = (stamp, load_workers(path, self.warnings))
        return copy.deepcopy(self.__parsed_workers[1])

    def worker(self, name: str) -> Worker:
        from runyard.core.errors import InputError

        for worker in self.workers():
            if worker.worker_id == name:
                return worker
        raise InputError(f"no worker named {name!r} in {self.workspace.workers_path}")

    def edit_workers(self, edit: Callable[[Any], None], event: str, **fields: Any) -> None:
        with self.lock:
            edit_workers(self.workspace.workers_path, edit)
            self.events.append(event, **fields)

    # ------------------------------------------------------------ queue

    def runs(self) -> list[Run]:
        return load_queue(self.workspace.queue_path)

    @contextmanager
    def queue_transaction(self) -> Iterator[list[Run]]:
        """Lock, load the queue, let the caller mutate the list, save if anything changed."""
        path = self.workspace.queue_path
        with self.lock:
            before = load_queue_raw(path)
            runs = parse_queue(path, before)
            yield runs
            after = [run.to_dict() for run in runs]
            if after != before:
                save_records(path, after)

    def active_runs(self) -> list[Run]:
        """The dispatched and running runs (the whole queue is validated all the same)."""
        return [run for run in self.runs() if run.is_active]
