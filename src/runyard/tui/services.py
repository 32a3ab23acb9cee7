"""The console's door to the core: every file read, file write and worker call goes here.

`ConsoleServices` is async and knows nothing of Textual, so it is tested like the core.
Two stores share the workspace: the event loop's (used by the async core calls: check,
dispatch, cancel, pull, patrol) and a second one used only by one background thread for
file-only work (loading the queue, adding and editing runs, teardown). Each store holds its
own `flock` descriptor, so the two exclude each other as two processes would, while the
queue of 10,000 runs is parsed off the UI thread.

Telemetry comes from a `TelemetrySource`: by default one core probe per worker through the
fleet; the demo and the benchmark pass simulated sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from runyard.core import attach, run_edits, teardown
from runyard.core.check import RunCheck, check
from runyard.core.control import CancelOutcome, cancel_run
from runyard.core.dispatch import DispatchReport, reconcile_then_dispatch
from runyard.core.fleet.telemetry import GpuProcess
from runyard.core.fleet.transports import Fleet
from runyard.core.gpu_processes import GpuProcessOwner, gpu_process_owners
from runyard.core.log_follow import LogFollower
from runyard.core.models import Run, Worker
from runyard.core.profiles import load_profile
from runyard.core.providers.vast.ledger import CostReport
from runyard.core.providers.vast.service import VastService
from runyard.core.pull import PullOutcome, pull_run
from runyard.core.runs import RunSpec, add_run, retry_run
from runyard.core.settings import Settings
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.telemetry_service import probe_worker
from runyard.core.workspace import Workspace
from runyard.tui.state import AlertLike, Probe

T = TypeVar("T")


class TelemetrySource(Protocol):
    """Probes workers for the fleet view."""

    async def probe(self, workers: Sequence[Worker]) -> list[Probe]: ...


class AlertSource(Protocol):
    """One health patrol tick (core.patrol over the fleet, or a stand-in)."""

    async def patrol(self, workers: Sequence[Worker]) -> list[AlertLike]: ...


class FleetTelemetry:
    """The real thing: one core telemetry probe per worker, all at once."""

    def __init__(self, fleet: Fleet, settings: Settings) -> None:
        self.fleet = fleet
        self.timeout = settings.ssh.connect_timeout + settings.ssh.command_timeout

    async def probe(self, workers: Sequence[Worker]) -> list[Probe]:
        async def one(worker: Worker) -> Probe:
            snapshot, latency, error = await probe_worker(self.fleet, worker, self.timeout)
            return Probe(worker.worker_id, snapshot, latency, error)

        return list(await asyncio.gather(*(one(w) for w in workers)))


class PatrolAlerts:
    """Alerts from `runyard.core.patrol` (the same ticks as `runyard alerts`)."""

    def __init__(self, store: WorkspaceStore, fleet: Fleet) -> None:
        self.store = store
        self.fleet = fleet

    async def patrol(self, workers: Sequence[Worker]) -> list[AlertLike]:
        from runyard.core.patrol import patrol

        return list(await patrol(self.store, self.fleet, workers))


class FileStamp:
    """Remembers a file's (mtime, size, inode) so an unchanged file is not parsed again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: tuple[int, int, int] | None = None

    def stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino


class ConsoleServices:
    """Async operations over one workspace for the console; owns the fleet's connections."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        fleet: Fleet | None = None,
        telemetry: TelemetrySource | None = None,
        alerts: AlertSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workspace = workspace
        self.store = WorkspaceStore(workspace)
        self.file_store = WorkspaceStore(workspace)  # used only on `self._files`' thread
        self.settings = self.store.settings()
        self.fleet = fleet or Fleet(workspace.root, self.settings)
        self.telemetry = telemetry or FleetTelemetry(self.fleet, self.settings)
        self.alerts = alerts or PatrolAlerts(self.store, self.fleet)
        self.clock = clock
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-files")
        self._queue = FileStamp(workspace.queue_path)
        self._workers_file = FileStamp(workspace.workers_path)
        self._workers: list[Worker] = []
        self._vast: VastService | None = None

    async def _in_file_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._files, call, *args)

    # ------------------------------------------------------------ reading the files

    async def load_workers(self, force: bool = False) -> tuple[list[Worker], bool]:
        """workers.yaml's workers, and whether they changed since the last call."""
        stamp = self._workers_file.stamp()
        if not force and stamp is not None and stamp == self._workers_file.seen:
            return self._workers, False
        self._workers = await self._in_file_thread(self.file_store.workers)
        self._workers_file.seen = stamp
        # Warm the event loop's store too, off the loop: its next `check` then finds the
        # parsed file instead of parsing it on the UI thread.
        await asyncio.to_thread(self.store.workers)
        return self._workers, True

    async def load_runs(self, force: bool = False) -> list[Run] | None:
        """The queue, or None when the file has not changed since it was last loaded."""
        stamp = self._queue.stamp()
        if not force and stamp == self._queue.seen:
            return None
        runs = await self._in_file_thread(self.file_store.runs)
        self._queue.seen = stamp
        return runs

    def warnings(self) -> list[str]:
        """Warnings the stores collected (unknown settings keys ...), each once."""
        found = list(dict.fromkeys(self.store.warnings + self.file_store.warnings))
        self.store.warnings.clear()
        self.file_store.warnings.clear()
        return found

    # ------------------------------------------------------------ the pipeline

    async def probe(self, workers: Sequence[Worker]) -> list[Probe]:
        return await self.telemetry.probe([w for w in workers if w.enabled])

    async def check(self) -> list[RunCheck]:
        return await check(self.store, self.fleet)

    async def dispatch(self, run_ids: Sequence[str] | None = None) -> DispatchReport:
        """Dispatch every pending run, or only `run_ids`, after fixing Vast drift (core's
        `reconcile_then_dispatch`, as `runyard dispatch` does)."""
        return await reconcile_then_dispatch(
            self.store,
            self.fleet,
            run_ids=list(run_ids) if run_ids is not None else None,
            vast=self.vast,
        )

    async def patrol(self, workers: Sequence[Worker]) -> list[AlertLike]:
        return await self.alerts.patrol([w for w in workers if w.enabled])

    # ------------------------------------------------------------ queue edits

    async def add_run(self, spec: RunSpec) -> Run:
        return await self._in_file_thread(add_run, self.file_store, spec)

    async def edit_run(self, run_id: str, spec: RunSpec) -> Run:
        return await self._in_file_thread(run_edits.edit_pending_run, self.file_store, run_id, spec)

    async def set_priority(self, run_id: str, priority: int) -> Run:
        return await self._in_file_thread(run_edits.set_priority, self.file_store, run_id, priority)

    async def retry(self, run_id: str) -> Run:
        return await self._in_file_thread(retry_run, self.file_store, run_id)

    async def cancel(self, run_id: str) -> CancelOutcome:
        return await cancel_run(self.store, self.fleet, run_id)

    async def pull(self, run_id: str) -> PullOutcome:
        return await pull_run(self.store, self.fleet, run_id)

    # ------------------------------------------------------------ workers

    async def teardown_plan(
        self, worker: str, action: teardown.TeardownAction, uptime_s: float | None
    ) -> teardown.TeardownPlan:
        return await self._in_file_thread(
            teardown.load_plan, self.file_store, worker, action, uptime_s
        )

    async def teardown(
        self,
        worker: str,
        action: teardown.TeardownAction,
        typed_name: str,
        uptime_s: float | None,
    ) -> teardown.TeardownOutcome:
        return await teardown.execute_teardown(
            self.store, worker, action, typed_name, uptime_s=uptime_s
        )

    def follower(self, run: Run) -> LogFollower:
        if run.worker is None:
            from runyard.core.errors import InputError

            raise InputError(f"run {run.id} is {run.status.value} and has no log yet")
        worker = self.store.worker(run.worker)
        return LogFollower(self.fleet, worker, run, timeout=self.settings.ssh.command_timeout)

    async def gpu_owners(
        self, worker: Worker, processes: Sequence[GpuProcess], runs: Sequence[Run]
    ) -> list[GpuProcessOwner]:
        return await gpu_process_owners(
            self.fleet, worker, processes, runs, timeout=self.settings.ssh.command_timeout
        )

    def attach_argv(self, worker: Worker, run: Run | None) -> list[str]:
        """The command that opens a shell (or the run's tmux) on `worker`."""
        platform = teardown.platform_of(worker)
        profile = load_profile(self.workspace.profiles_dir, platform)
        known_hosts = [
            Path("~/.ssh/known_hosts").expanduser(),
            self.workspace.state_dir / "known_hosts",
        ]
        return attach.interactive_argv(
            worker,
            self.fleet.workspace_path(worker),
            run,
            tmux=profile.detach_primitive.value == "tmux",
            known_hosts=known_hosts,
        )

    # ------------------------------------------------------------ Vast

    @property
    def vast(self) -> VastService:
        """The workspace's Vast service (settings read once; no key looked up yet)."""
        if self._vast is None:
            self._vast = VastService(self.store)
        return self._vast

    async def vast_problem(self) -> str | None:
        """Why the Vast API cannot be called (no key configured), or None."""
        from runyard.core.errors import InputError

        def resolve() -> str | None:
            try:
                self.vast.compute  # noqa: B018 (resolves the key, reads no network)
            except InputError as exc:
                return (
                    "no Vast API configured: set VAST_API_KEY (or vast.api_key_file in "
                    f"runyard.yaml, or `vastai set api-key`): {exc}"
                )
            _import_vast_sdk()
            return None

        return await self._in_file_thread(resolve)

    async def vast_cost(self) -> CostReport:
        """Spend from the cost ledger alone (no API call)."""
        return await self._in_file_thread(self.vast.cost)

    async def close(self) -> None:
        await self.fleet.close()
        self._files.shutdown(wait=False, cancel_futures=True)


def _import_vast_sdk() -> None:
    """Import the vastai SDK (seconds) here, off the UI thread, once.

    The SDK reads `sys.stdout.encoding` on import; under Textual stdout is a capture
    object without one, so it gets the attribute first.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not hasattr(stream, "encoding"):
            with contextlib.suppress(AttributeError, TypeError):
                stream.encoding = "utf-8"  # type: ignore[misc]
    import vastai  # type: ignore[import-untyped]
    import vastai.api.query  # type: ignore[import-untyped]  # noqa: F401
