"""Fleet status: one probe per worker, all workers at once, each bounded by its timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from runyard.core.errors import RunyardError
from runyard.core.fleet.executor import run_short_script
from runyard.core.fleet.telemetry import (
    WorkerSnapshot,
    parse_probe_output,
    probe_call,
    probe_function,
    snapshot_to_status,
)
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Worker
from runyard.core.store.workspace_store import WorkspaceStore


async def probe_worker(
    fleet: Fleet, worker: Worker, timeout: float
) -> tuple[WorkerSnapshot | None, float | None, str | None]:
    """A worker's snapshot, the probe's round trip in ms, or why there is none."""
    seen = fleet.gpu_processes.recall(worker.worker_id, time.time())
    probe = probe_function(fleet.workspace_path(worker), worker.health.heartbeat_command)
    start = time.perf_counter()
    try:
        # An SSH worker's persistent shell keeps the probe function: each tick sends only
        # the line that calls it.
        result = await run_short_script(
            fleet.executor(worker), probe_call(probe, seen), timeout, (probe,)
        )
    except RunyardError as exc:
        return None, None, str(exc)
    latency_ms = (time.perf_counter() - start) * 1000
    snapshot = parse_probe_output(result.stdout, time.time(), seen)
    fleet.gpu_processes.remember(worker.worker_id, snapshot)
    return snapshot, latency_ms, None


def status_record(
    worker: Worker,
    snapshot: WorkerSnapshot | None,
    latency_ms: float | None,
    error: str | None,
    runs: Sequence[str],
) -> dict[str, Any]:
    """The contract's `worker status --json` object for one worker."""
    record: dict[str, Any] = {
        "name": worker.worker_id,
        "pool": worker.worker_pool,
        "kind": worker.kind,
        "reachable": snapshot is not None,
        "error": error,
        "latency_ms": None if latency_ms is None else round(latency_ms, 1),
        "gpus": [],
        "disk": None,
        "runs": list(runs),
    }
    if snapshot is not None:
        record.update(snapshot_to_status(snapshot))
        if not snapshot.heartbeat_ok:
            record["error"] = f"heartbeat failed: {snapshot.heartbeat_output.strip()[:200]}"
    return record


async def fleet_status(
    store: WorkspaceStore, fleet: Fleet, workers: Sequence[Worker]
) -> list[dict[str, Any]]:
    timeout = store.settings().ssh.connect_timeout + store.settings().ssh.command_timeout
    active: dict[str, list[str]] = {}
    for run in store.active_runs():
        if run.worker:
            active.setdefault(run.worker, []).append(run.id)
    probes = await asyncio.gather(*(probe_worker(fleet, w, timeout) for w in workers))
    return [
        status_record(w, s, lat, err, active.get(w.worker_id, []))
        for w, (s, lat, err) in zip(workers, probes, strict=True)
    ]
