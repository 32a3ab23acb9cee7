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
    if worker.ssh is not None and not worker.ssh.host.strip():
        raise InputError("--host must not be empty")
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


def remove_worker(store: WorkspaceStore, name: str, force: bool = False) -> list[str]:
    """Drop `name` from workers.yaml; returns the cancelled runs whose owed kill is given up.

    Refused while runs are active there, and while a cancel there was never confirmed (its
    process may still run) unless `force`: the operator says the box is gone for good.
    """
    runs = [r for r in store.runs() if r.worker == name]
    active = [r.id for r in runs if r.is_active]
    if active:
        raise InputError(
            f"worker {name!r} has active runs ({', '.join(active)}); cancel or finish them first"
        )
    owed = [r.id for r in runs if r.kill_owed]
    if owed and not force:
        raise InputError(
            f"worker {name!r} may still run cancelled runs ({', '.join(owed)}) whose kill it "
            "never confirmed: `runyard check` stops them once it answers, or pass --force "
            "if the box is gone for good"
        )

    def edit(entries: Any) -> None:
        del entries[find_index(entries, name)]

    store.edit_workers(edit, "worker.removed", worker=name)
    if owed:
        with store.queue_transaction() as queue:
            for run in queue:
                if run.id in owed:
                    run.kill_pending_since = None
                    store.events.append("run.cancel_given_up", run=run.id, worker=name)
    return owed
