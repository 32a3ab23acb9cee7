"""Dispatch: a pure planner (queue + fleet -> assignments) and the launcher that executes it.

Launching is three steps so a crash at any point is recoverable: mark the runs
`dispatched` under the lock, launch outside it (the run directory's `mkdir` is the launch
lock, so a retried launch never starts a run twice), then record pids under the lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runyard.core.errors import InputError, RunyardError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, RunStatus, Worker
from runyard.core.profiles import Detach, load_profile
from runyard.core.protocol import LaunchRequest, build_launch, parse_launch, run_dir_path
from runyard.core.runs import set_status
from runyard.core.secrets import resolve_secrets, split_env
from runyard.core.store.events import utc_now
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.teardown import platform_of

if TYPE_CHECKING:
    from runyard.core.providers.vast.service import VastService


@dataclass(frozen=True)
class Assignment:
    run_id: str
    run_name: str
    worker: str


def plan_dispatch(
    runs: Sequence[Run],
    workers: Sequence[Worker],
    default_pool: str,
    pool: str | None = None,
    skip_workers: frozenset[str] = frozenset(),
    run_ids: Collection[str] | None = None,
) -> list[Assignment]:
    """Assign pending runs to free worker slots: highest priority first, then oldest.

    A pinned run waits for its worker; a run with no pool goes to the default pool. Among
    eligible workers the one with the most free slots wins, so runs spread out. `run_ids`
    limits the plan to a selection (the console's marked runs).
    """
    usable = [w for w in workers if w.enabled and w.worker_id not in skip_workers]
    free: dict[str, int] = {w.worker_id: w.slots for w in usable}
    for run in runs:
        if run.holds_slot and run.worker in free:
            free[run.worker] -= 1
    by_pool: dict[str, list[Worker]] = {}
    for worker in usable:
        by_pool.setdefault(worker.worker_pool, []).append(worker)
    pending = [
        r for r in runs if r.status == RunStatus.PENDING and (run_ids is None or r.id in run_ids)
    ]
    # A stable sort: runs queued within the same second keep queue order (oldest first).
    pending.sort(key=lambda r: (-r.priority, r.created_at))
    plan: list[Assignment] = []
    for run in pending:
        run_pool = run.pool or default_pool
        if pool is not None and run_pool != pool:
            continue
        if run.pinned_worker is not None:
            candidates = [w for w in usable if w.worker_id == run.pinned_worker]
        else:
            candidates = by_pool.get(run_pool, [])
        best: Worker | None = None
        for worker in candidates:
            if free[worker.worker_id] > 0 and (
                best is None or free[worker.worker_id] > free[best.worker_id]
            ):
                best = worker
        if best is None:
            continue
        free[best.worker_id] -= 1
        plan.append(Assignment(run.id, run.name, best.worker_id))
    return plan


@dataclass
class DispatchOutcome:
    run_id: str
    run_name: str
    worker: str
    ok: bool
    pid: int | None = None
    error: str | None = None
    warning: str | None = None  # launched, but not as asked (tmux missing: setsid instead)


def detach_primitives(store: WorkspaceStore, workers: Iterable[Worker]) -> dict[str, str]:
    """How each worker's runs detach: "tmux" where its platform profile says so, else "setsid".

    Each platform's profile is read once. A profile that cannot be read costs a warning,
    not the dispatch: its runs start with setsid, which every worker supports.
    """
    by_platform: dict[str, str] = {}
    primitives: dict[str, str] = {}
    for worker in workers:
        platform = platform_of(worker)
        if platform not in by_platform:
            try:
                profile = load_profile(store.workspace.profiles_dir, platform)
            except RunyardError as exc:
                store.warnings.append(f"{exc}; runs on {worker.worker_id} start with setsid")
                by_platform[platform] = "setsid"
            else:
                tmux = profile.detach_primitive is Detach.TMUX
                by_platform[platform] = "tmux" if tmux else "setsid"
        primitives[worker.worker_id] = by_platform[platform]
    return primitives


async def dispatch(
    store: WorkspaceStore,
    fleet: Fleet,
    pool: str | None = None,
    dry_run: bool = False,
    run_ids: Collection[str] | None = None,
) -> list[DispatchOutcome]:
    settings = store.settings()
    workers = {w.worker_id: w for w in store.workers()}
    if pool is not None and not any(w.worker_pool == pool for w in workers.values()):
        raise InputError(f"no worker in pool {pool!r} (see `runyard worker list`)")
    if dry_run:
        plan = plan_dispatch(
            store.runs(), list(workers.values()), settings.default_pool, pool, run_ids=run_ids
        )
        return [DispatchOutcome(a.run_id, a.run_name, a.worker, ok=True) for a in plan]

    requests: dict[str, tuple[Worker, LaunchRequest]] = {}
    with store.queue_transaction() as runs:
        plan = plan_dispatch(
            runs, list(workers.values()), settings.default_pool, pool, run_ids=run_ids
        )
        by_id = {run.id: run for run in runs}
        # Every secret first: a missing one stops the dispatch before any run moves (and
        # before the events log records a dispatch that never happens).
        secret_values = {a.run_id: resolve_secrets(split_env(by_id[a.run_id].env)[1]) for a in plan}
        planned_workers = dict.fromkeys(a.worker for a in plan)
        detach = detach_primitives(store, (workers[name] for name in planned_workers))
        for assignment in plan:
            run = by_id[assignment.run_id]
            worker = workers[assignment.worker]
            plain_env, _ = split_env(run.env)
            workspace = fleet.workspace_path(worker)
            run.attempts += 1
            run.worker = worker.worker_id
            run.run_dir = run_dir_path(workspace, run.id, run.attempts)
            run.dispatched_at = utc_now()
            run.error = None
            set_status(
                store, run, RunStatus.DISPATCHED, worker=worker.worker_id, attempt=run.attempts
            )
            requests[run.id] = (
                worker,
                LaunchRequest(
                    workspace=workspace,
                    run_id=run.id,
                    run_name=run.name,
                    attempt=run.attempts,
                    workdir=_workdir(run, workspace),
                    env=plain_env,
                    secrets=secret_values[run.id],
                    command=run.command,
                    detach=detach[worker.worker_id],
                ),
            )

    async def launch(worker: Worker, request: LaunchRequest) -> DispatchOutcome:
        outcome = DispatchOutcome(request.run_id, request.run_name, worker.worker_id, ok=False)
        script, payload = build_launch(request)
        try:
            result = await fleet.executor(worker).run(
                script, payload, timeout=settings.ssh.command_timeout
            )
        except RunyardError as exc:
            outcome.error = str(exc)
            return outcome
        launched = parse_launch(result.stdout)
        if launched.already_exists:
            outcome.ok = True  # an earlier attempt of this launch got there; check resolves it
            return outcome
        if not result.ok or launched.pid is None:
            outcome.error = (
                result.stderr.decode("utf-8", "replace").strip()
                or f"launch script exited {result.exit_status}"
            ).splitlines()[-1]
            return outcome
        outcome.ok = True
        outcome.pid = launched.pid
        outcome.warning = launched.warning
        return outcome

    outcomes = await asyncio.gather(*(launch(w, r) for w, r in requests.values()))

    with store.queue_transaction() as runs:
        by_id = {run.id: run for run in runs}
        for outcome in outcomes:
            found = by_id.get(outcome.run_id)
            if found is None or found.status != RunStatus.DISPATCHED:
                continue  # cancelled or edited while launching
            run = found
            if outcome.ok and outcome.pid is not None:
                run.pid = outcome.pid
                run.started_at = utc_now()
                noted: dict[str, str] = {}
                if outcome.warning is not None:
                    # The CLI prints store warnings and the console shows them: the operator
                    # learns why there is no tmux session to attach to.
                    store.warnings.append(f"{run.name} on {outcome.worker}: {outcome.warning}")
                    noted["warning"] = outcome.warning
                set_status(store, run, RunStatus.RUNNING, pid=outcome.pid, **noted)
            elif not outcome.ok:
                # Never launched: back to pending; the next dispatch is a fresh attempt
                # (a new run directory, so a half-made one can never block it).
                run.worker = None
                run.run_dir = None
                run.error = outcome.error
                set_status(
                    store, run, RunStatus.PENDING, reason="launch failed", error=outcome.error
                )
    return list(outcomes)


def _workdir(run: Run, workspace: str) -> str:
    if run.workdir is None:
        return workspace
    if run.workdir.startswith(("/", "~")):
        return run.workdir
    return f"{workspace.rstrip('/')}/{run.workdir}"


@dataclass(frozen=True)
class DispatchReport:
    """What `reconcile_then_dispatch` did: the outcomes, the drift it fixed first, and why
    it could not look for drift (the other workers still got their runs)."""

    outcomes: list[DispatchOutcome]
    reconciled: list[str]
    reconcile_problem: str | None = None


async def reconcile_then_dispatch(
    store: WorkspaceStore,
    fleet: Fleet,
    pool: str | None = None,
    dry_run: bool = False,
    run_ids: Collection[str] | None = None,
    vast: VastService | None = None,
) -> DispatchReport:
    """Fix rented boxes' drift (a port or host that moved overnight), then dispatch.

    As the seeds advise before every batch; the console and `runyard dispatch` both come
    here. Without Vast workers there is no API call and no SDK import; a dry run only
    plans, so it fixes nothing. `vast` is the caller's open service, if it keeps one.
    """
    from runyard.core.providers.vast.reconcile import has_rented_workers

    reconciled: list[str] = []
    problem: str | None = None
    if not dry_run and has_rented_workers(store.workers()):
        from runyard.core.providers.vast.service import VastService

        try:
            report = await (vast or VastService(store)).reconcile(fix=True)
            reconciled = report.applied
        except RunyardError as exc:
            problem = f"Vast drift not checked before dispatch: {exc}"
    outcomes = await dispatch(store, fleet, pool, dry_run, run_ids)
    return DispatchReport(outcomes, reconciled, problem)
