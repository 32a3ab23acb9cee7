"""Acting on one run on its worker: cancel it, read or follow its log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from runyard.core.errors import InputError, OperationalError, RunyardError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, RunStatus, Worker
from runyard.core.protocol import (
    ProbeTarget,
    build_cancel,
    build_check,
    build_log_snapshot,
    build_log_stream,
    build_log_tail,
    parse_check,
    parse_log_snapshot,
)
from runyard.core.runs import find_run, set_status
from runyard.core.secrets import StreamRedactor, known_secret_values, redact_bytes
from runyard.core.store.events import utc_now
from runyard.core.store.workspace_store import WorkspaceStore


@dataclass
class CancelOutcome:
    run: Run
    was: RunStatus
    signal: str | None = None  # term, kill, gone, nopid, noworker


CANCEL_SIGNALS = frozenset({"term", "kill", "gone", "nopid"})


async def cancel_run(store: WorkspaceStore, fleet: Fleet, ref: str) -> CancelOutcome:
    """Mark the run cancelled first (so nothing requeues it), then kill its process group.

    Until the kill is confirmed the run keeps `kill_pending_since`, so a failed kill is
    sent again by the next cancel of the run or by `check`.
    """
    with store.queue_transaction() as runs:
        run = find_run(runs, ref)
        was = run.status
        if not run.kill_owed:  # else: a cancel whose kill was never confirmed, sent again
            if run.status not in (RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING):
                raise InputError(f"run {run.id} is {run.status.value}; there is nothing to cancel")
            set_status(store, run, RunStatus.CANCELLED)
            if was != RunStatus.PENDING and run.run_dir is not None and run.worker is not None:
                run.kill_pending_since = utc_now()
    outcome = CancelOutcome(run, was)
    if run.kill_pending_since is None:
        return outcome
    worker = next((w for w in store.workers() if w.worker_id == run.worker), None)
    try:
        outcome.signal = await stop_cancelled_process(store, fleet, run, worker)
    except RunyardError as exc:
        store.events.append("run.cancel_failed", run=run.id, error=str(exc))
        raise OperationalError(
            f"run {run.id} is marked cancelled, but its process could not be stopped: {exc}; "
            f"`runyard check` or `runyard run cancel {run.id}` will stop it once "
            f"{run.worker} answers"
        ) from exc
    return outcome


async def stop_cancelled_process(
    store: WorkspaceStore, fleet: Fleet, run: Run, worker: Worker | None
) -> str:
    """Kill a cancelled run's process group on `worker`; once confirmed, clear
    `kill_pending_since`.

    Returns how it ended (term, kill, gone, nopid, or noworker when its worker has left
    workers.yaml, `worker` None, and cannot be reached any more); raises `RunyardError`
    when unconfirmed.
    """
    if worker is None or run.run_dir is None:
        signal = "noworker"
    else:
        grace = store.settings().runs.cancel_grace_seconds
        result = await fleet.executor(worker).run(
            build_cancel(run.run_dir, grace), timeout=grace + store.settings().ssh.command_timeout
        )
        said = [line for line in result.text().splitlines() if line.startswith("cancel=")]
        signal = said[-1].partition("=")[2].strip() if said else ""
        if signal not in CANCEL_SIGNALS:
            raise OperationalError(
                f"the cancel script on {run.worker} did not report its outcome "
                f"(exit {result.exit_status}: {result.stderr.decode('utf-8', 'replace')[-200:]!r})"
            )
    with store.queue_transaction() as runs:
        stored = find_run(runs, run.id)
        stored.kill_pending_since = None
        store.events.append("run.cancel_confirmed", run=run.id, signal=signal)
    run.kill_pending_since = None
    return signal


def _located(store: WorkspaceStore, ref: str) -> tuple[Run, str]:
    run = find_run(store.runs(), ref)
    if run.run_dir is None or run.worker is None:
        raise InputError(f"run {run.id} is {run.status.value} and has no log yet")
    return run, run.worker


async def read_log(store: WorkspaceStore, fleet: Fleet, ref: str, lines: int | None) -> bytes:
    run, worker_name = _located(store, ref)
    assert run.run_dir is not None
    result = await fleet.executor(store.worker(worker_name)).run(build_log_tail(run.run_dir, lines))
    return redact_bytes(result.stdout, known_secret_values(run.env))


async def follow_log(
    store: WorkspaceStore, fleet: Fleet, ref: str, lines: int | None, poll_seconds: float = 0.5
) -> AsyncIterator[bytes]:
    """Yield the log's last lines, then new bytes as they arrive, until the run has ended."""
    run, worker_name = _located(store, ref)
    assert run.run_dir is not None
    redactor = StreamRedactor(known_secret_values(run.env))
    async for chunk in _follow(store, fleet, run, worker_name, lines, poll_seconds):
        if shown := redactor.feed(chunk):
            yield shown
    if rest := redactor.flush():
        yield rest


async def _follow(
    store: WorkspaceStore,
    fleet: Fleet,
    run: Run,
    worker_name: str,
    lines: int | None,
    poll_seconds: float,
) -> AsyncIterator[bytes]:
    assert run.run_dir is not None
    executor = fleet.executor(store.worker(worker_name))
    run_dir = run.run_dir
    offset, first = parse_log_snapshot(
        (await executor.run(build_log_snapshot(run_dir, lines))).stdout
    )
    if first:
        yield first
    stream = getattr(executor, "stream", None)
    if stream is not None and run.pid is not None:
        # Push, not poll: `tail -F --pid` over the open connection ends with the run.
        async with contextlib.aclosing(
            stream(build_log_stream(run_dir, offset, run.pid))
        ) as chunks:
            async for chunk in chunks:
                offset += len(chunk)
                yield chunk
    while True:
        chunk = await executor.run(build_log_tail(run_dir, offset=offset))
        if chunk.stdout:
            offset += len(chunk.stdout)
            yield chunk.stdout
            continue
        # No new bytes: ask the worker (not the queue, which only `check` advances)
        # whether the run is still going; once it is not, drain the log one last time.
        report = parse_check(
            (await executor.run(build_check([ProbeTarget("run", run_dir, 0)]))).stdout
        )
        probe = report.runs.get("run")
        if probe is None or probe.exit_code is not None or not probe.alive:
            tail = await executor.run(build_log_tail(run_dir, offset=offset))
            if tail.stdout:
                yield tail.stdout
            return
        await asyncio.sleep(poll_seconds)
