"""`Fleet`: the executor and the absolute workspace path of each worker.

Local workers run through `LocalExecutor`; SSH workers through one pooled asyncssh
connection each. asyncssh is imported only when an SSH worker is first used, so verbs
that touch only local workers (and every file-only verb) never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runyard.core.fleet.executor import Executor, LocalExecutor
from runyard.core.fleet.telemetry import GpuProcessMemo
from runyard.core.models import Worker
from runyard.core.settings import Settings

if TYPE_CHECKING:
    from runyard.core.fleet.sessions import SessionPool


class Fleet:
    """Hands out executors for workers; owns the SSH session pool while it lives, and what
    the workers' probes learnt that the next probe can reuse."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        self._local: dict[str, LocalExecutor] = {}
        self._pool: SessionPool | None = None
        self.gpu_processes = GpuProcessMemo()

    def workspace_path(self, worker: Worker) -> str:
        """The worker's workspace as the worker's shell should see it."""
        if worker.is_local:
            return str((self.root / Path(worker.workspace).expanduser()).resolve())
        return worker.workspace

    def executor(self, worker: Worker) -> Executor:
        if worker.is_local:
            if worker.worker_id not in self._local:
                self._local[worker.worker_id] = LocalExecutor(worker.worker_id, cwd=str(self.root))
            return self._local[worker.worker_id]
        return self.ssh_pool().executor(worker)

    def ssh_pool(self) -> SessionPool:
        if self._pool is None:
            from runyard.core.fleet.sessions import SessionPool  # lazy: asyncssh is heavy

            self._pool = SessionPool.from_settings(self.root, self.settings)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
