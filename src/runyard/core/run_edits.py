"""Editing queued runs: change a pending run's spec, or its priority, in one locked transaction.

Only a pending run can be edited: once dispatched, its command and environment are on the
worker. The same validation as `run add` applies, so the console's form and the CLI refuse
the same inputs.
"""

from __future__ import annotations

from runyard.core.errors import InputError
from runyard.core.models import Run, RunStatus
from runyard.core.runs import RunSpec, find_run, validate_spec
from runyard.core.store.workspace_store import WorkspaceStore


def spec_of(run: Run) -> RunSpec:
    """The `RunSpec` a run was queued with, for pre-filling an edit form."""
    return RunSpec(
        command=run.command,
        name=run.name,
        project=run.project,
        pool=run.pool,
        worker=run.pinned_worker,
        priority=run.priority,
        env=dict(run.env),
        workdir=run.workdir,
        outputs=list(run.outputs),
        metrics_regex=run.metrics_regex,
        verify_command=run.verify_command,
    )


def _require_pending(run: Run, what: str) -> None:
    if run.status != RunStatus.PENDING:
        raise InputError(
            f"run {run.id} is {run.status.value}; only a pending run's {what} can change"
        )


def edit_pending_run(store: WorkspaceStore, ref: str, spec: RunSpec) -> Run:
    """Replace a pending run's spec with `spec`; the name stays unique in the queue."""
    validate_spec(spec, store)
    with store.queue_transaction() as runs:
        run = find_run(runs, ref)
        _require_pending(run, "spec")
        name = spec.name or run.name
        if any(other.name == name and other.id != run.id for other in runs):
            raise InputError(f"a run named {name!r} is already in the queue")
        before = spec_of(run)
        run.name = name
        run.command = spec.command
        run.project = spec.project
        run.pool = spec.pool
        run.pinned_worker = spec.worker
        run.priority = spec.priority
        run.env = dict(spec.env)
        run.workdir = spec.workdir
        run.outputs = list(spec.outputs)
        run.metrics_regex = spec.metrics_regex
        run.verify_command = spec.verify_command
        after = spec_of(run)
        # Field names only: env values may hold secret references.
        changed = [key for key in vars(after) if getattr(after, key) != getattr(before, key)]
        if changed:
            store.events.append("run.edited", run=run.id, fields=changed)
    return run


def set_priority(store: WorkspaceStore, ref: str, priority: int) -> Run:
    """Reprioritise a pending run (dispatch takes the highest priority first)."""
    with store.queue_transaction() as runs:
        run = find_run(runs, ref)
        _require_pending(run, "priority")
        if run.priority != priority:
            store.events.append("run.priority", run=run.id, old=run.priority, new=priority)
            run.priority = priority
    return run
