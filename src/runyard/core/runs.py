"""Queue operations: add, find, cancel bookkeeping and retry, each one locked transaction."""

from __future__ import annotations

import re
import secrets as random_source
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from runyard.core.errors import InputError
from runyard.core.metrics import compile_metrics_regex
from runyard.core.models import (
    ENV_NAME_PATTERN,
    FINISHED_STATES,
    RUN_NAME_PATTERN,
    Run,
    RunStatus,
    can_transition,
)
from runyard.core.store.events import utc_now
from runyard.core.store.workspace_store import WorkspaceStore


@dataclass
class RunSpec:
    """What the operator asks for in `run add` (or the console's form)."""

    command: str
    name: str | None = None
    project: str | None = None
    pool: str | None = None
    worker: str | None = None
    priority: int = 0
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    outputs: list[str] = field(default_factory=list)
    metrics_regex: str | None = None
    verify_command: str | None = None


def parse_env_assignments(items: Iterable[str]) -> dict[str, str]:
    """`K=V` strings to a dict; a bad name is an input error."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not ENV_NAME_PATTERN.match(key):
            raise InputError(f"--env {item!r}: expected NAME=VALUE with a valid variable name")
        env[key] = value
    return env


def new_run_id(taken: set[str]) -> str:
    while True:
        run_id = "r" + random_source.token_hex(4)[:7]
        if run_id not in taken:
            return run_id


def _default_name(spec: RunSpec, run_id: str) -> str:
    stem = spec.project or re.sub(
        r"[^A-Za-z0-9._-]+", "-", spec.command.split()[0] if spec.command.split() else "run"
    )
    stem = re.sub(r"^[^A-Za-z0-9]+", "", stem.rsplit("/", 1)[-1])[:40] or "run"
    return f"{stem}-{run_id}"


def validate_spec(spec: RunSpec, store: WorkspaceStore) -> None:
    if not spec.command.strip():
        raise InputError("--command must not be empty")
    if spec.name is not None and not RUN_NAME_PATTERN.match(spec.name):
        raise InputError(
            f"--name {spec.name!r}: use letters, digits, '.', '_' and '-' (it names the run's output directory)"
        )
    if spec.metrics_regex:
        try:
            compile_metrics_regex(spec.metrics_regex)
        except (ValueError, re.error) as exc:
            raise InputError(f"--metrics-regex: {exc}") from None
    if spec.pool is not None and not spec.pool.strip():
        raise InputError("--pool must not be empty")
    if spec.worker is not None:
        worker = store.worker(spec.worker)
        if spec.pool is not None and worker.worker_pool != spec.pool:
            raise InputError(
                f"worker {spec.worker!r} is in pool {worker.worker_pool!r}, not {spec.pool!r}"
            )


def add_run(store: WorkspaceStore, spec: RunSpec) -> Run:
    """Append a pending run; its name must be unique in the queue."""
    validate_spec(spec, store)
    if spec.pool is not None and not any(w.worker_pool == spec.pool for w in store.workers()):
        # Queued all the same (boxes for the pool may be rented next), but never silently.
        store.warnings.append(
            f"no worker is in pool {spec.pool!r} yet: the run waits until one is added "
            "(see `runyard worker list`)"
        )
    with store.queue_transaction() as runs:
        ids = {run.id for run in runs}
        names = {run.name for run in runs}
        run_id = new_run_id(ids)
        name = spec.name or _default_name(spec, run_id)
        if name in names:
            raise InputError(
                f"a run named {name!r} is already in the queue (names are output directories)"
            )
        if name in ids:  # `run show NAME` would find that run by its id instead
            raise InputError(f"--name {name!r} is another run's id; pick another name")
        run = build_run(spec, run_id, name)
        runs.append(run)
        store.events.append("run.added", run=run.id, name=run.name)
    return run


def build_run(spec: RunSpec, run_id: str, name: str) -> Run:
    """A new pending run from what the operator asked for."""
    return Run(
        id=run_id,
        name=name,
        command=spec.command,
        project=spec.project,
        pool=spec.pool,
        pinned_worker=spec.worker,
        priority=spec.priority,
        env=dict(spec.env),
        workdir=spec.workdir,
        outputs=list(spec.outputs),
        metrics_regex=spec.metrics_regex,
        verify_command=spec.verify_command,
        created_at=utc_now(),
    )


def find_run(runs: Sequence[Run], ref: str) -> Run:
    """A run by id, unique id prefix, or name."""
    for run in runs:
        if run.id == ref or run.name == ref:
            return run
    matches = [run for run in runs if run.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(f"{ref!r} matches {len(matches)} runs; give more of the id")
    raise InputError(f"no run {ref!r} in the queue")


def set_status(store: WorkspaceStore, run: Run, status: RunStatus, **fields: object) -> None:
    """Move a run along the state machine and log the event; the caller holds the lock."""
    if status == run.status:
        return
    if not can_transition(run.status, status):
        raise InputError(f"run {run.id} is {run.status.value}; it cannot become {status.value}")
    previous = run.status
    run.status = status
    if status in FINISHED_STATES and run.ended_at is None:
        run.ended_at = utc_now()
    store.events.append("run.status", run=run.id, old=previous.value, new=status.value, **fields)


def archive_attempt(run: Run) -> None:
    """Move the current attempt's facts into `history` before a retry starts a new one."""
    if run.attempts == 0:
        return
    run.history.append(
        {
            "attempt": run.attempts,
            "status": run.status.value,
            "worker": run.worker,
            "exit_code": run.exit_code,
            "run_dir": run.run_dir,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "metrics": dict(run.metrics),
            "error": run.error,
        }
    )
    run.exit_code = None
    run.pid = None
    run.boot_id = None
    run.run_dir = None
    run.dispatched_at = None
    run.started_at = None
    run.ended_at = None
    run.error = None
    run.worker = None
    run.pull = None


def retry_run(store: WorkspaceStore, ref: str) -> Run:
    """A finished run goes back to pending; the next dispatch is a new attempt."""
    with store.queue_transaction() as runs:
        run = find_run(runs, ref)
        if run.status not in FINISHED_STATES:
            raise InputError(
                f"run {run.id} is {run.status.value}; only finished runs can be retried"
            )
        if run.kill_owed:
            raise InputError(
                f"run {run.id}'s process may still be running on {run.worker} (its cancel "
                f"could not stop it); run `runyard run cancel {run.id}` again when "
                f"{run.worker} is back"
            )
        archive_attempt(run)
        set_status(store, run, RunStatus.PENDING, reason="retry")
    return run
