"""One handler per CLI verb: turn arguments into a core call and print the outcome."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runyard.cli.output import format_metrics, print_json, print_table, warn

if TYPE_CHECKING:
    from runyard.core.fleet.transports import Fleet
    from runyard.core.models import Worker
    from runyard.core.runs import RunSpec
    from runyard.core.store.workspace_store import WorkspaceStore

T = TypeVar("T")


def open_store(args: argparse.Namespace) -> WorkspaceStore:
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.core.workspace import find_workspace

    return WorkspaceStore(find_workspace(args.workspace))


def pool_workers(store: WorkspaceStore, pool: str | None, enabled_only: bool) -> list[Worker]:
    """The workers a `--pool` option names; a pool with none is the operator's typo."""
    from runyard.core.errors import InputError

    workers = [
        w
        for w in store.workers()
        if (w.enabled or not enabled_only) and (pool is None or w.worker_pool == pool)
    ]
    if pool is not None and not workers:
        which = "enabled worker" if enabled_only else "worker"
        raise InputError(f"no {which} in pool {pool!r} (see `runyard worker list`)")
    return workers


def flush_warnings(store: WorkspaceStore) -> None:
    for message in dict.fromkeys(store.warnings):
        warn(message)
    store.warnings.clear()


def with_fleet(store: WorkspaceStore, body: Callable[[Fleet], Awaitable[T]]) -> T:
    """Run an async core call with a fleet that is closed afterwards."""
    import asyncio  # lazy: file-only verbs never pay for the event loop's import

    from runyard.core.fleet.transports import Fleet

    async def main() -> T:
        fleet = Fleet(store.workspace.root, store.settings())
        try:
            return await body(fleet)
        finally:
            await fleet.close()

    return asyncio.run(main())


# ---------------------------------------------------------------- console, init


def console(args: argparse.Namespace) -> int:
    """The default verb: open the Textual console on the workspace."""
    import importlib

    store = open_store(args)
    store.settings()  # a malformed runyard.yaml is reported here, before the screen opens
    flush_warnings(store)
    # Imported only here, so no other verb ever loads Textual.
    run_console: Callable[..., int] = importlib.import_module("runyard.tui.app").run_console
    return run_console(store.workspace)


def demo(args: argparse.Namespace) -> int:
    from runyard.cli.demo import run_demo

    return run_demo(args)


def init(args: argparse.Namespace) -> int:
    from runyard.core.workspace import init_workspace

    workspace, created = init_workspace(Path(args.dir))
    for path in created:
        print(f"created {path.relative_to(workspace.root) if path != workspace.root else path}")
    if not created:
        print(f"{workspace.root} is already a runyard workspace; nothing changed")
    else:
        print(f"workspace ready: {workspace.root}")
    return 0


# ---------------------------------------------------------------- workers


def worker_add(args: argparse.Namespace) -> int:
    if getattr(args, "vast_instance", None) is not None:
        from runyard.cli.vast_verbs import worker_add_from_vast

        return worker_add_from_vast(args)
    from runyard.core.models import SSHSettings, Worker
    from runyard.core.workers import add_worker

    store = open_store(args)
    pool = args.pool or store.settings().default_pool
    worker = Worker(
        worker_id=args.name,
        kind="local" if args.local else "ssh",
        worker_pool=pool,
        ssh=None if args.local else SSHSettings(args.host, args.port, args.user, args.key),
        workspace=args.worker_workspace or ("." if args.local else "~/runyard"),
        slots=args.slots,
        notes=args.notes,
    )
    worker.resources.gpu = args.gpus
    add_worker(store, worker)
    flush_warnings(store)
    print(f"added worker {worker.worker_id} ({worker.kind}, pool {worker.worker_pool})")
    return 0


def worker_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    workers = pool_workers(store, args.pool, enabled_only=False)
    flush_warnings(store)
    if args.json:
        print_json([{"name": w.worker_id, **w.to_dict()} for w in workers])
        return 0
    rows = []
    for w in workers:
        where = "local" if w.is_local else _ssh_target(w)
        rows.append(
            [
                w.worker_id,
                w.kind,
                w.worker_pool,
                "yes" if w.enabled else "no",
                where,
                w.slots,
                w.resources.gpu,
            ]
        )
    print_table(["NAME", "KIND", "POOL", "ENABLED", "ADDRESS", "SLOTS", "GPUS"], rows)
    return 0


def _ssh_target(worker: Any) -> str:
    ssh = worker.ssh
    user = f"{ssh.user}@" if ssh.user else ""
    port = f":{ssh.port}" if ssh.port else ""
    return f"{user}{ssh.host}{port}"


def worker_status(args: argparse.Namespace) -> int:
    from runyard.core.telemetry_service import fleet_status

    store = open_store(args)
    workers = pool_workers(store, args.pool, enabled_only=True)
    statuses = with_fleet(store, lambda fleet: fleet_status(store, fleet, workers))
    flush_warnings(store)
    all_up = all(s["reachable"] for s in statuses)
    if args.json:
        print_json(statuses)
        return 0 if all_up else 1
    runs_on: dict[str, list[str]] = {}
    for run in store.active_runs():
        if run.worker:
            runs_on.setdefault(run.worker, []).append(run.id)
    rows = []
    for s in statuses:
        gpus = s.get("gpus") or []
        gpu_text = (
            " ".join(f"{g['util_pct'] if g['util_pct'] is not None else '?'}%" for g in gpus) or "-"
        )
        disk = s.get("disk") or {}
        rows.append(
            [
                s["name"],
                "yes" if s["reachable"] else "NO",
                f"{s['latency_ms']:.0f}ms" if s.get("latency_ms") is not None else "-",
                gpu_text,
                f"{disk.get('used_pct', '?')}% / {disk.get('inodes_used_pct', '?')}%"
                if disk
                else "-",
                " ".join(runs_on.get(s["name"], [])) or "-",
                s.get("error") or "",
            ]
        )
    print_table(["NAME", "UP", "LATENCY", "GPU UTIL", "DISK / INODES", "RUNS", "ERROR"], rows)
    return 0 if all_up else 1


def worker_remove(args: argparse.Namespace) -> int:
    from runyard.core.workers import remove_worker

    store = open_store(args)
    given_up = remove_worker(store, args.name, force=args.force)
    print(f"removed worker {args.name}")
    if given_up:
        print(f"gave up stopping {', '.join(given_up)} there (cancelled, never confirmed stopped)")
    return 0


def worker_trust(args: argparse.Namespace) -> int:
    import asyncio

    from runyard.core.fleet.ssh_options import SSHClientSettings, trust_host

    store = open_store(args)
    worker = store.worker(args.name)
    settings = SSHClientSettings.from_runyard_settings(store.workspace.root, store.settings())
    trusted = asyncio.run(trust_host(worker, settings, replace=args.replace))
    state = "recorded" if trusted.newly_recorded else "already trusted"
    print(
        f"{worker.worker_id}: {trusted.host}:{trusted.port} {trusted.key_description} — {state} in {trusted.path}"
    )
    store.events.append("worker.trusted", worker=worker.worker_id, key=trusted.key_description)
    return 0


def worker_setup(args: argparse.Namespace) -> int:
    from runyard.core.setup import setup_worker

    store = open_store(args)
    worker = store.worker(args.name)
    report = with_fleet(store, lambda fleet: setup_worker(fleet, worker, args.venv, args.env_file))
    store.events.append("worker.setup", worker=worker.worker_id, ok=report.ok, venv=report.venv)
    if args.json:
        print_json(
            {
                "name": report.worker,
                "workspace": report.workspace,
                "tools": report.tools,
                "venv": report.venv,
                "credentials": report.credentials,
                "problems": report.problems,
            }
        )
        return 0 if report.ok else 1
    print(f"{report.worker}: workspace {report.workspace}")
    for tool, version in report.tools.items():
        print(f"  {tool:<11} {version or 'MISSING'}")
    if report.venv:
        print(f"  venv from {report.venv}")
    if report.credentials:
        print(
            f"  credentials: {', '.join(report.credentials)} -> ~/.config/runyard/credentials.env (mode 600)"
        )
    for problem in report.problems:
        print(f"  ! {problem}", file=sys.stderr)
    return 0 if report.ok else 1


def sync(args: argparse.Namespace) -> int:
    from runyard.core.errors import InputError
    from runyard.core.fleet.rsync import push_workspace

    store = open_store(args)
    worker = store.worker(args.name)
    if worker.is_local:
        raise InputError(
            f"{worker.worker_id} is the local worker: it already runs in this workspace"
        )
    target = with_fleet(
        store, lambda fleet: push_workspace(fleet, worker, store.workspace.root, args.exclude)
    )
    store.events.append("worker.synced", worker=worker.worker_id)
    print(f"synced {store.workspace.root} -> {worker.worker_id}:{target}")
    return 0


# ---------------------------------------------------------------- runs


def run_spec_from_args(args: argparse.Namespace, command: str) -> RunSpec:
    """The RunSpec behind `run add` and `shard`, from their shared flags."""
    from runyard.core.runs import RunSpec, parse_env_assignments

    return RunSpec(
        command=command,
        name=args.name,
        project=args.project,
        pool=args.pool,
        worker=getattr(args, "worker", None),
        priority=args.priority,
        env=parse_env_assignments(args.env),
        workdir=args.workdir,
        outputs=args.outputs,
        metrics_regex=args.metrics_regex,
        verify_command=args.verify_command,
    )


def run_add(args: argparse.Namespace) -> int:
    from runyard.core.runs import add_run

    store = open_store(args)
    run = add_run(store, run_spec_from_args(args, args.command))
    flush_warnings(store)
    print(f"queued {run.name} {run.id}")
    return 0


LIST_FIELDS = (
    "id",
    "name",
    "status",
    "worker",
    "exit_code",
    "attempts",
    "metrics",
    "project",
    "priority",
    "pool",
    "command",
    "created_at",
    "started_at",
    "ended_at",
    "error",
)


def run_list(args: argparse.Namespace) -> int:
    from runyard.core.models import RunStatus
    from runyard.core.store.queue_file import load_queue_raw, parse_queue

    store = open_store(args)
    if args.status is not None and args.status not in {s.value for s in RunStatus}:
        from runyard.core.errors import InputError

        raise InputError(
            f"--status {args.status!r}: one of {', '.join(s.value for s in RunStatus)}"
        )
    path = store.workspace.queue_path
    runs = parse_queue(path, load_queue_raw(path))
    runs = [
        r
        for r in runs
        if (args.status is None or r.status.value == args.status)
        and (args.project is None or r.project == args.project)
    ]
    if args.json:
        import json

        sys.stdout.write(json.dumps([{k: r.__dict__[k] for k in LIST_FIELDS} for r in runs]))
        sys.stdout.write("\n")
        return 0
    rows = [
        [
            r.id,
            r.name,
            r.status.value,
            r.worker or r.pinned_worker or (r.pool and f"pool:{r.pool}") or "",
            "" if r.exit_code is None else r.exit_code,
            r.attempts,
            r.priority,
            format_metrics(r.metrics),
        ]
        for r in runs
    ]
    print_table(["ID", "NAME", "STATUS", "WORKER", "EXIT", "TRIES", "PRIO", "METRICS"], rows)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from runyard.core.runs import find_run

    store = open_store(args)
    run = find_run(store.runs(), args.id)
    if args.json:
        print_json(run.to_dict())
        return 0
    for key, value in run.to_dict().items():
        if value in (None, [], {}, ""):
            continue
        print(f"{key:>14}: {value}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from runyard.core.control import cancel_run

    store = open_store(args)
    outcome = with_fleet(store, lambda fleet: cancel_run(store, fleet, args.id))
    how = {
        "term": "stopped with SIGTERM",
        "kill": "killed with SIGKILL after the grace period",
        "gone": "its process had already ended",
        "nopid": "it had not started",
        "noworker": f"worker {outcome.run.worker} is no longer in workers.yaml, "
        "so its process was not stopped",
    }.get(outcome.signal or "", "")
    print(f"cancelled {outcome.run.name} {outcome.run.id}" + (f" ({how})" if how else ""))
    return 0


def run_retry(args: argparse.Namespace) -> int:
    from runyard.core.runs import retry_run

    store = open_store(args)
    run = retry_run(store, args.id)
    print(f"requeued {run.name} {run.id} (attempt {run.attempts + 1} on the next dispatch)")
    return 0


# ---------------------------------------------------------------- pipeline


def dispatch(args: argparse.Namespace) -> int:
    from runyard.core.dispatch import reconcile_then_dispatch

    store = open_store(args)
    report = with_fleet(
        store, lambda fleet: reconcile_then_dispatch(store, fleet, args.pool, args.dry_run)
    )
    flush_warnings(store)
    for change in report.reconciled:
        print(f"vast drift fixed first: {change}", file=sys.stderr)
    if report.reconcile_problem:
        print(f"warning: {report.reconcile_problem}", file=sys.stderr)
    outcomes = report.outcomes
    if args.json:
        print_json(
            [
                {
                    "id": o.run_id,
                    "name": o.run_name,
                    "worker": o.worker,
                    "ok": o.ok,
                    "pid": o.pid,
                    "error": o.error,
                    "dry_run": args.dry_run,
                }
                for o in outcomes
            ]
        )
    else:
        verb = "would dispatch" if args.dry_run else "dispatched"
        for o in outcomes:
            if o.ok:
                pid = f"  pid={o.pid}" if o.pid else ""
                print(f"{verb} {o.run_id} {o.run_name} -> {o.worker}{pid}")
            else:
                print(f"FAILED {o.run_id} {o.run_name} -> {o.worker}: {o.error}", file=sys.stderr)
        ok = sum(1 for o in outcomes if o.ok)
        print(
            f"{ok}/{len(outcomes)} {verb}"
            if outcomes
            else "nothing to dispatch (no pending run fits a free worker)"
        )
    return 0 if all(o.ok for o in outcomes) else 1


def check(args: argparse.Namespace) -> int:
    from runyard.core.check import check as core_check

    store = open_store(args)
    results = with_fleet(store, lambda fleet: core_check(store, fleet))
    flush_warnings(store)
    if args.json:
        print_json(
            [
                {
                    "id": c.run_id,
                    "name": c.name,
                    "worker": c.worker,
                    "old": c.old.value,
                    "status": c.new.value,
                    "pid": c.pid,
                    "exit_code": c.exit_code,
                    "metrics": c.metrics,
                    "last_line": c.last_line,
                    "reason": c.reason,
                    "error": c.error,
                }
                for c in results
            ]
        )
        return 0 if not any(c.error for c in results) else 1
    for c in results:
        if c.error:
            print(f"{c.run_id}: {c.new.value:<9} ERROR {c.error}")
            continue
        detail = (
            f"exit={c.exit_code}" if c.exit_code is not None else (f"pid={c.pid}" if c.pid else "")
        )
        change = f" (was {c.old.value})" if c.old != c.new else ""
        why = (
            f" [{c.reason}]" if c.reason and c.new.value in ("lost", "pending", "cancelled") else ""
        )
        line = f"  | {c.last_line}" if c.last_line else ""
        print(f"{c.run_id}: {c.new.value:<9} {detail}{change}{why}{line}")
    if not results:
        print("no active runs")
    return 0 if not any(c.error for c in results) else 1


def logs(args: argparse.Namespace) -> int:
    from runyard.core.control import follow_log, read_log

    store = open_store(args)
    out = sys.stdout.buffer
    if not args.follow:
        out.write(with_fleet(store, lambda fleet: read_log(store, fleet, args.id, args.lines)))
        return 0

    async def follow(fleet: Fleet) -> None:
        async for chunk in follow_log(
            store, fleet, args.id, args.lines if args.lines is not None else 10
        ):
            out.write(chunk)
            out.flush()

    with_fleet(store, follow)
    return 0


def pull(args: argparse.Namespace) -> int:
    from runyard.core.errors import InputError
    from runyard.core.models import FINISHED_STATES
    from runyard.core.pull import pull_run

    store = open_store(args)
    if args.all == (args.id is not None):
        raise InputError("give one run id or --all")
    if args.all:
        refs = [
            r.id
            for r in store.runs()
            if r.status in FINISHED_STATES and r.run_dir and not (r.pull and r.pull.verified)
        ]
    else:
        refs = [args.id]

    async def pull_all(fleet: Fleet) -> list[Any]:
        return [await pull_run(store, fleet, ref) for ref in refs]

    outcomes = with_fleet(store, pull_all)
    if args.json:
        print_json(
            [
                {
                    "id": o.run.id,
                    "name": o.run.name,
                    "directory": str(o.directory),
                    "verified": o.verified,
                    "files": len(o.files),
                    "bytes": sum(f.size for f in o.files),
                    "problems": o.problems,
                }
                for o in outcomes
            ]
        )
    else:
        for o in outcomes:
            state = "verified" if o.verified else "NOT VERIFIED"
            size = sum(f.size for f in o.files)
            print(
                f"pulled {o.run.id} {o.run.name}: {len(o.files)} files, {size} bytes -> "
                f"{o.directory.relative_to(store.workspace.root)}  {state}"
            )
            for problem in o.problems:
                print(f"  ! {problem}")
        if not outcomes:
            print("nothing to pull")
    return 0 if all(o.verified for o in outcomes) else 1
