"""Worker registry edits: add and remove entries in workers.yaml, comments kept."""

from __future__ import annotations

from typing import Any

from runyard.core.errors import InputError
from runyard.core.models import WORKER_NAME_PATTERN, Worker
from runyard.core.store.workers_file import find_index, to_yaml_node
from runyard.core.store.workspace_store import WorkspaceStore


def add_worker(store: WorkspaceStore, worker: Worker) -> None:
    if not WORKER_NAME_PATTERN.match(worker.worker_id):
        raise InputError(
            f"{worker.worker_id!r} is not a valid worker name (letters, digits, '.', '_', '-')"
        )
    if worker.slots < 1:
        raise InputError("--slots must be at least 1")
    if worker.resources.gpu < 0:
        raise InputError(f"--gpus {worker.resources.gpu}: must be at least 0")
    if worker.ssh is not None and worker.ssh.port is not None and not 0 < worker.ssh.port < 65536:
        raise InputError(f"--port {worker.ssh.port} is not a TCP port")

    def edit(entries: Any) -> None:
        for entry in entries:
            if isinstance(entry, dict) and entry.get("worker_id") == worker.worker_id:
                raise InputError(f"a worker named {worker.worker_id!r} already exists")
        entries.append(to_yaml_node(worker.to_dict()))

    store.edit_workers(edit, "worker.added", worker=worker.worker_id)


def remove_worker(store: WorkspaceStore, name: str) -> None:
    active = [r.id for r in store.runs() if r.is_active and r.worker == name]
    if active:
        raise InputError(
            f"worker {name!r} has active runs ({', '.join(active)}); cancel or finish them first"
        )

    def edit(entries: Any) -> None:
        del entries[find_index(entries, name)]

    store.edit_workers(edit, "worker.removed", worker=name)
