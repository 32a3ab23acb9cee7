"""Which run holds each GPU process, and which processes are zombies holding VRAM.

nvidia-smi names processes by pid. One `ps` of the worker's process table (pid, parent,
session) lets `patrol.owning_run` walk from a GPU pid to the run it belongs to: the run's
own pid, a descendant, or a process in its `setsid` session. The GPU detail view shows the
run beside each process; a process that belongs to no active run is a zombie holding memory
that the next run will miss (the patrol raises the same finding as an alert).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runyard.core.errors import RunyardError
from runyard.core.fleet.telemetry import GpuProcess
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, Worker
from runyard.core.patrol import ProcessInfo, owning_run, parse_process_table

PROCESS_TABLE_SCRIPT = "LC_ALL=C ps -A -o pid= -o ppid= -o sid= 2>/dev/null; true"


@dataclass(frozen=True)
class GpuProcessOwner:
    """A process holding GPU memory and the run it belongs to, if any."""

    process: GpuProcess
    run_id: str | None
    run_name: str | None
    run_active: bool

    @property
    def zombie(self) -> bool:
        """Holding VRAM without belonging to a run that is still going."""
        return not self.run_active


def attribute_processes(
    processes: Sequence[GpuProcess], table: Mapping[int, ProcessInfo], runs: Sequence[Run]
) -> list[GpuProcessOwner]:
    """Each GPU process with the run it belongs to, if any (pure)."""
    by_id = {run.id: run for run in runs}
    run_pids = {run.pid: run.id for run in runs if run.pid is not None}
    owners: list[GpuProcessOwner] = []
    for process in processes:
        run_id = owning_run(process.pid, table, run_pids)
        run = by_id.get(run_id) if run_id is not None else None
        owners.append(
            GpuProcessOwner(
                process=process,
                run_id=run.id if run else None,
                run_name=run.name if run else None,
                run_active=bool(run and run.is_active),
            )
        )
    return owners


async def gpu_process_owners(
    fleet: Fleet,
    worker: Worker,
    processes: Sequence[GpuProcess],
    runs: Sequence[Run],
    timeout: float | None = None,
) -> list[GpuProcessOwner]:
    """Attribute `processes` on `worker` to the runs whose attempt is on it."""
    table: dict[int, ProcessInfo] = {}
    if processes:
        try:
            result = await fleet.executor(worker).run(PROCESS_TABLE_SCRIPT, timeout=timeout)
            table = parse_process_table(result.stdout.decode("utf-8", "replace"))
        except RunyardError:
            table = {}  # unreachable right now: match by pid alone
    on_worker = [run for run in runs if run.worker == worker.worker_id]
    return attribute_processes(processes, table, on_worker)
