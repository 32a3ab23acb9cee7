"""Tests only: an SSH-less fleet whose simulated workers are sandbox folders on this machine.

Every worker whose SSH host ends in `.sim.invalid` (runyard.sim.synthetic) runs here, in
its own folder under `.runyard/sim/<worker>/`, with its own simulated `nvidia-smi`
(runyard.sim.fake_nvidia_smi) first on its PATH. Runs really run there through the real
run protocol, so GPUs move when runs start and end, and teardown, pulls and logs behave as
on real boxes, without the cost of an SSH server. The product's demo fleet is
`runyard.sim.fleet` (loopback SSH servers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.core.fleet.executor import CommandResult, LocalExecutor
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Resources, SSHSettings, Worker
from runyard.core.settings import Settings
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace
from runyard.sim.fake_nvidia_smi import write_fake_nvidia_smi
from runyard.sim.synthetic import SIM_HOST_SUFFIX


@dataclass(frozen=True)
class DemoWorker:
    """One simulated sandbox box: its pool, platform and simulated GPUs."""

    name: str
    pool: str
    platform: str
    gpus: tuple[dict[str, Any], ...] = ()
    price_dph: float | None = None
    instance_id: int | None = None
    slots: int = 1
    zombies: tuple[dict[str, Any], ...] = field(default=())

    def worker(self) -> Worker:
        return Worker(
            worker_id=self.name,
            kind="ssh",
            worker_pool=self.pool,
            ssh=SSHSettings(host=f"{self.name}{SIM_HOST_SUFFIX}", user="sim"),
            workspace="~/runyard",
            resources=Resources(gpu=len(self.gpus)),
            instance_id=self.instance_id,
            slots=self.slots,
            platform=self.platform,
            price_dph=self.price_dph,
            notes="simulated in tests: a sandbox folder on this machine",
        )


def sim_dir(workspace: Workspace, worker: str) -> Path:
    return workspace.state_dir / "sim" / worker


def is_simulated(worker: Worker) -> bool:
    return worker.ssh is not None and worker.ssh.host.endswith(SIM_HOST_SUFFIX)


class SandboxExecutor(LocalExecutor):
    """A local executor whose scripts find the worker's simulated nvidia-smi first."""

    def __init__(self, name: str, home: Path, bin_dir: Path) -> None:
        super().__init__(name, cwd=str(home))
        self.bin_dir = bin_dir

    async def run(
        self, script: str, stdin: bytes = b"", timeout: float | None = None
    ) -> CommandResult:
        prefix = f'export PATH="{self.bin_dir}:$PATH" HOME="{self.cwd}"\n'
        return await super().run(prefix + script, stdin, timeout)


class SandboxFleet(Fleet):
    """A fleet where simulated workers are sandbox folders on this machine."""

    def __init__(self, workspace: Workspace, settings: Settings) -> None:
        super().__init__(workspace.root, settings)
        self.workspace = workspace
        self._sandboxes: dict[str, SandboxExecutor] = {}

    def _home(self, worker: Worker) -> Path:
        return sim_dir(self.workspace, worker.worker_id) / "home"

    def workspace_path(self, worker: Worker) -> str:
        if is_simulated(worker):
            return str(self._home(worker) / "runyard")
        return super().workspace_path(worker)

    def executor(self, worker: Worker) -> Any:
        if not is_simulated(worker):
            return super().executor(worker)
        executor = self._sandboxes.get(worker.worker_id)
        if executor is None:
            home = self._home(worker)
            (home / "runyard").mkdir(parents=True, exist_ok=True)
            bin_dir = sim_dir(self.workspace, worker.worker_id) / "bin"
            executor = SandboxExecutor(worker.worker_id, home, bin_dir)
            self._sandboxes[worker.worker_id] = executor
        return executor


def install_demo_workers(workspace: Workspace, demo: Sequence[DemoWorker]) -> None:
    """Register the sandbox workers and give each its folder and simulated GPUs."""
    store = WorkspaceStore(workspace)
    known = {w.worker_id for w in store.workers()}
    for box in demo:
        if box.name not in known:
            add_worker(store, box.worker())
        home = sim_dir(workspace, box.name) / "home"
        (home / "runyard").mkdir(parents=True, exist_ok=True)
        gpus = [dict(gpu) for gpu in box.gpus]
        if gpus and box.zombies:
            gpus[0]["zombies"] = list(box.zombies)
        if gpus:
            write_fake_nvidia_smi(sim_dir(workspace, box.name) / "bin", gpus, home / "runyard")
