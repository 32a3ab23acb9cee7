"""Check: ask every worker about its active runs in one round trip, advance their states.

Exit code file -> done/failed; live pid of this very run on the same boot -> running;
otherwise lost (rebooted or killed), which the retry policy may requeue. It also sends
again the kill of a cancelled run whose process was not confirmed stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runyard.core.control import stop_cancelled_process
from runyard.core.errors import RunyardError
from runyard.core.fleet.executor import run_short_script
from runyard.core.fleet.transports import Fleet
from runyard.core.metrics import parse_metrics
from runyard.core.models import Run, RunStatus, Worker
from runyard.core.protocol import CheckReport, ProbeTarget, RunProbe, build_check, parse_check
from runyard.core.runs import archive_attempt, set_status
from runyard.core.secrets import known_secret_values, redact
from runyard.core.store.workspace_store import WorkspaceStore

CHECK_TAIL_BYTES = 8192
# A dispatched run with no trace on its worker after this long was never launched.
LAUNCH_GRACE_SECONDS = 60.0


@dataclass
class RunCheck:
    """The outcome of checking one run."""

    run_id: str
    name: str
    worker: str | None
    old: RunStatus
    new: RunStatus
    pid: int | None = None
    exit_code: int | None = None
    last_line: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    log_age_s: float | None = None


def _age_seconds(timestamp: str | None) -> float:
    if not timestamp:
        return float("inf")
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return time.time() - then.timestamp()


def judge(run: Run, probe: RunProbe, current_boot: str | None) -> tuple[RunStatus, str | None]:
    """The run's true state from what its worker reported (pure)."""
    if probe.exit_code is not None:
        return (RunStatus.DONE if probe.exit_code == 0 else RunStatus.FAILED), None
    if not probe.dir_exists:
        if run.status == RunStatus.DISPATCHED:
            if _age_seconds(run.dispatched_at) < LAUNCH_GRACE_SECONDS:
                return run.status, None
            return RunStatus.PENDING, "never launched"
        return RunStatus.LOST, "run directory is gone"
    recorded_boot = run.boot_id or probe.boot_id
    if recorded_boot and current_boot and recorded_boot != current_boot:
        return RunStatus.LOST, "worker rebooted"
    if probe.alive:
        return RunStatus.RUNNING, None
    if probe.pid is None and _age_seconds(run.dispatched_at) < LAUNCH_GRACE_SECONDS:
        return run.status, None
    return RunStatus.LOST, "process gone without an exit code"


def last_line(tail: bytes) -> str:
    for line in reversed(tail.decode("utf-8", "replace").splitlines()):
        line = line.rsplit("\r", 1)[-1].strip()
        if line:
            return line
    return ""


async def _probe_worker(
    fleet: Fleet, worker: Worker, runs: Sequence[Run], timeout: float
) -> CheckReport | RunyardError:
    targets = [ProbeTarget(run.id, run.run_dir or "", CHECK_TAIL_BYTES) for run in runs]
    try:
        result = await run_short_script(fleet.executor(worker), build_check(targets), timeout)
    except RunyardError as exc:
        return exc
    return parse_check(result.stdout)


async def check(store: WorkspaceStore, fleet: Fleet) -> list[RunCheck]:
    settings = store.settings()
    workers = {w.worker_id: w for w in store.workers()}
    queue = store.runs()
    by_worker: dict[str, list[Run]] = {}
    unstopped: list[Run] = []  # cancelled, the kill not confirmed: send it again
    results: list[RunCheck] = []
    for run in queue:
        if run.kill_owed:
            unstopped.append(run)
        if not run.is_active:
            continue
        if run.worker in workers and run.run_dir:
            by_worker.setdefault(run.worker, []).append(run)
        else:
            results.append(
                RunCheck(
                    run.id,
                    run.name,
                    run.worker,
                    run.status,
                    run.status,
                    error=f"worker {run.worker!r} is not in workers.yaml",
                )
            )
    names = list(by_worker)
    reports, stops = await asyncio.gather(
        asyncio.gather(
            *(
                _probe_worker(fleet, workers[n], by_worker[n], settings.ssh.command_timeout)
                for n in names
            )
        ),
        asyncio.gather(*(_finish_cancel(store, fleet, run, workers) for run in unstopped)),
    )
    results.extend(stops)
    observed: dict[str, tuple[RunProbe, str | None]] = {}
    for name, report in zip(names, reports, strict=True):
        for run in by_worker[name]:
            if isinstance(report, RunyardError):
                results.append(
                    RunCheck(run.id, run.name, name, run.status, run.status, error=str(report))
                )
            elif run.id in report.runs:
                observed[run.id] = (report.runs[run.id], report.current_boot_id)

    if not observed:
        return results
    with store.queue_transaction() as runs:
        for run in runs:
            if run.id not in observed or not run.is_active:
                continue
            probe, current_boot = observed[run.id]
            if run.run_dir is None:
                continue
            results.append(_apply(store, run, probe, current_boot, settings.runs.retry_lost))
    return results


def _apply(
    store: WorkspaceStore, run: Run, probe: RunProbe, current_boot: str | None, retry_lost: int
) -> RunCheck:
    old = run.status
    new, reason = judge(run, probe, current_boot)
    tail_text = probe.log_tail.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        run.metrics.update(parse_metrics(tail_text, run.metrics_regex))
    if probe.pid is not None:
        run.pid = probe.pid
    if probe.boot_id and run.boot_id is None:
        run.boot_id = probe.boot_id
    if new == RunStatus.PENDING:
        run.worker = None
        run.run_dir = None
        run.error = reason
    if new in (RunStatus.DONE, RunStatus.FAILED):
        run.exit_code = probe.exit_code
    if new == RunStatus.LOST:
        run.error = reason
    if new != old:
        set_status(store, run, new, reason=reason, exit_code=probe.exit_code)
    if new == RunStatus.LOST and _lost_attempts(run) <= retry_lost:
        archive_attempt(run)
        set_status(store, run, RunStatus.PENDING, reason="retry policy: lost run requeued")
    return RunCheck(
        run.id,
        run.name,
        run.worker,
        old,
        run.status,
        pid=run.pid,
        exit_code=run.exit_code,
        last_line=redact(last_line(probe.log_tail), known_secret_values(run.env)),
        metrics=dict(run.metrics),
        reason=reason,
        log_age_s=probe.log_age_s,
    )


async def _finish_cancel(
    store: WorkspaceStore, fleet: Fleet, run: Run, workers: Mapping[str, Worker]
) -> RunCheck:
    """Send again the kill of a cancelled run; its status stays cancelled either way."""
    status = RunStatus.CANCELLED
    worker = workers.get(run.worker or "")
    if worker is None:
        error = (
            f"worker {run.worker!r} is not in workers.yaml, so this cancelled run's process "
            f"cannot be stopped; `runyard run cancel {run.id}` stops trying"
        )
        return RunCheck(run.id, run.name, run.worker, status, status, error=error)
    try:
        signal = await stop_cancelled_process(store, fleet, run, worker)
    except RunyardError as exc:
        error = f"cancelled, but its process is not confirmed stopped: {exc}"
        return RunCheck(run.id, run.name, run.worker, status, status, error=error)
    reason = f"the cancelled run's process is stopped ({signal})"
    return RunCheck(run.id, run.name, run.worker, status, status, reason=reason)


def _lost_attempts(run: Run) -> int:
    return 1 + sum(1 for h in run.history if h.get("status") == RunStatus.LOST.value)
