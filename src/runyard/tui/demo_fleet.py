"""The console's simulated fleet: sandbox workers with fake GPUs, and synthetic telemetry.

Two simulations, both always labelled SIMULATED on screen:

* `SandboxFleet` (the demo and the screenshots): every worker whose SSH host ends in
  `.sim.invalid` runs on this machine, in its own sandbox folder under
  `.runyard/sim/<worker>/`, with its own simulated `nvidia-smi` (runyard.sim.fake_nvidia_smi)
  first on its PATH. Runs really run there through the real run protocol, so the GPUs move
  when runs start and end, and teardown, pulls and logs behave as on real boxes.
* `SyntheticTelemetry` (tests and the benchmark): snapshots computed in process from a tick
  counter, so a hundred workers cost nothing to probe and snapshot tests see the same
  numbers every time.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.core.fleet.executor import CommandResult, LocalExecutor
from runyard.core.fleet.telemetry import DiskUsage, GpuProcess, GpuSample, WorkerSnapshot
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Resources, SSHSettings, Worker
from runyard.core.runs import RunSpec, add_run
from runyard.core.settings import Settings
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace, init_workspace
from runyard.sim.fake_nvidia_smi import write_fake_nvidia_smi
from runyard.tui.state import AlertLike, Probe

SIM_HOST_SUFFIX = ".sim.invalid"  # a reserved TLD: never resolves, so never a real box
REPO_ROOT = Path(__file__).resolve().parents[3]

H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "power_limit_w": 700.0,
        "sm_clock_max_mhz": 1980}  # fmt: skip
A100 = {"name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920, "power_limit_w": 400.0,
        "sm_clock_max_mhz": 1410}  # fmt: skip
RTX4090 = {"name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564, "power_limit_w": 450.0,
           "sm_clock_max_mhz": 2520}  # fmt: skip
RTX3090 = {"name": "NVIDIA GeForce RTX 3090", "memory_total_mib": 24576, "power_limit_w": 350.0,
           "sm_clock_max_mhz": 1950}  # fmt: skip


@dataclass(frozen=True)
class DemoWorker:
    """One simulated box of the demo fleet."""

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
            notes="simulated by `runyard demo`: a sandbox folder on this machine",
        )


DEMO_WORKERS: tuple[DemoWorker, ...] = (
    DemoWorker("tower-3090", "tailnet", "generic-ssh", (RTX3090, RTX3090), slots=2),
    DemoWorker("dgx-a100", "tailnet", "generic-ssh", (A100,) * 4, slots=2),
    DemoWorker("vast-h100-1", "vastai", "vast", (H100,), price_dph=2.49, instance_id=37906248),
    DemoWorker(
        "vast-4090-2", "vastai", "vast", (RTX4090,), price_dph=0.39, instance_id=37911113,
        zombies=({"pid": 999_001, "used_memory_mib": 6144, "process_name": "python3"},),
    ),
)  # fmt: skip


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


def install_demo_workers(workspace: Workspace, demo: Sequence[DemoWorker] = DEMO_WORKERS) -> None:
    """Register the demo workers and give each its sandbox and simulated GPUs."""
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


def _demo_competition(workspace: Workspace) -> Path:
    """The demo competition's folder in the workspace (copied in from the checkout)."""
    target = workspace.competitions_dir / "demo"
    source = REPO_ROOT / "competitions" / "demo"
    if not target.exists() and source.is_dir():
        shutil.copytree(
            source, target, ignore=shutil.ignore_patterns("submissions", "outputs", "__pycache__")
        )
    return target


def queue_demo_runs(workspace: Workspace) -> None:
    """A morning's worth of runs: a sweep across the pools, a long one, one that fails."""
    store = WorkspaceStore(workspace)
    train = _demo_competition(workspace) / "train.py"
    if store.runs():
        return
    specs = [
        RunSpec(f"python3 -u {train} --epochs 60 --sleep 1.0 --lr {lr}", name=f"sweep-lr{lr}",
                project="demo", pool="tailnet", priority=5)
        for lr in ("0.003", "0.01", "0.03")
    ] + [
        RunSpec(f"python3 -u {train} --epochs 200 --sleep 0.8", name="long-h100", project="demo",
                worker="vast-h100-1", priority=3),
        RunSpec(f"python3 -u {train} --epochs 30 --sleep 0.4 --fail-at-epoch 12",
                name="flaky-4090", project="demo", pool="vastai", priority=4),
        RunSpec(f"python3 -u {train} --epochs 20 --sleep 0.2", name="baseline-local",
                project="demo", pool="default", priority=9),
        RunSpec(f"python3 -u {train} --epochs 90 --sleep 1.0 --lr 0.02", name="ablation-wd",
                project="ablation", pool="tailnet", priority=1),
    ]  # fmt: skip
    for spec in specs:
        add_run(store, spec)


DEMO_SETTINGS = """\
# runyard settings for the simulated demo fleet (refreshes faster than the defaults).
default_pool: default
refresh:
  fleet_seconds: 2
  runs_seconds: 2
"""


def build_demo_workspace(root: Path, *, fresh: bool = False, runs: bool = True) -> Workspace:
    """A workspace with the local worker, the simulated boxes and (optionally) queued runs."""
    if fresh and root.exists():
        shutil.rmtree(root)
    existed = (root / "runyard.yaml").exists()
    workspace, _ = init_workspace(root)
    if not existed:
        workspace.settings_path.write_text(DEMO_SETTINGS, encoding="utf-8")
    install_demo_workers(workspace)
    if runs:
        queue_demo_runs(workspace)
    return workspace


def open_demo_console(root: Path, *, fresh: bool = False) -> int:
    """`runyard demo`'s console: the simulated fleet, auto-dispatch on, labelled SIMULATED."""
    from runyard.tui.app import RunyardApp
    from runyard.tui.services import ConsoleServices

    workspace = build_demo_workspace(root, fresh=fresh)
    store = WorkspaceStore(workspace)
    services = ConsoleServices(workspace, fleet=SandboxFleet(workspace, store.settings()))
    app = RunyardApp(services, simulated=True)
    app.controller.auto_dispatch = True
    result = app.run()
    return result if isinstance(result, int) else 0


# ---------------------------------------------------------------- synthetic telemetry


def synthetic_workers(count: int, gpus_per_worker: int = 4) -> list[Worker]:
    """`count` rented-looking workers for the benchmark and snapshot tests."""
    return [
        Worker(
            worker_id=f"sim-{index:03d}",
            kind="ssh",
            worker_pool="vastai" if index % 3 else "tailnet",
            ssh=SSHSettings(host=f"sim-{index:03d}{SIM_HOST_SUFFIX}"),
            resources=Resources(gpu=gpus_per_worker),
            platform="vast" if index % 3 else "generic-ssh",
            price_dph=round(0.35 + (index % 7) * 0.4, 2) if index % 3 else None,
        )
        for index in range(count)
    ]


class StaticAlerts:
    """An alert source that returns the same findings every tick (tests, benchmark)."""

    def __init__(self, alerts: Sequence[AlertLike] = ()) -> None:
        self.alerts = list(alerts)

    async def patrol(self, workers: Sequence[Worker]) -> list[AlertLike]:
        return list(self.alerts)


class SyntheticTelemetry:
    """Snapshots computed from a tick counter: deterministic and free to produce."""

    def __init__(self, gpus_per_worker: int = 4, unreachable: Sequence[str] = ()) -> None:
        self.gpus_per_worker = gpus_per_worker
        self.unreachable = set(unreachable)
        self.tick = 0

    def snapshot(self, worker: Worker, number: int) -> WorkerSnapshot:
        gpus: list[GpuSample] = []
        processes: list[GpuProcess] = []
        for index in range(self.gpus_per_worker):
            wave = 0.5 + 0.5 * math.sin(self.tick * 0.7 + number * 1.3 + index)
            busy = (number + index) % 3 != 0
            uuid = f"GPU-{number:03d}-{index}"
            gpus.append(
                GpuSample(
                    index=index,
                    name=str(H100["name"]),
                    uuid=uuid,
                    util_pct=round(70 + 29 * wave) if busy else 0,
                    mem_used_mib=round(65000 * (0.8 + 0.2 * wave)) if busy else 3,
                    mem_total_mib=81559,
                    power_w=round(450 + 230 * wave, 1) if busy else 70.0,
                    power_limit_w=700.0,
                    temp_c=round(60 + 15 * wave) if busy else 33,
                    sm_clock_mhz=round(1800 + 170 * wave) if busy else 210,
                    sm_clock_max_mhz=1980,
                )
            )
            if busy:
                processes.append(GpuProcess(uuid, index, 4000 + number * 10 + index, "python3",
                                            gpus[-1].mem_used_mib))  # fmt: skip
        used_pct = 40.0 + (number * 7) % 55
        return WorkerSnapshot(
            taken_at=float(self.tick),
            heartbeat_ok=True,
            hostname=worker.worker_id,
            boot_id=f"boot-{number}",
            uptime_s=3600.0 * (1 + number % 30),
            nvidia_smi="ok",
            gpus=gpus,
            gpu_processes=processes,
            disk=DiskUsage(
                path="/root",
                total_bytes=500 * 2**30,
                used_bytes=int(500 * 2**30 * used_pct / 100),
                avail_bytes=int(500 * 2**30 * (100 - used_pct) / 100),
                used_pct=used_pct,
                inodes_total=32_000_000,
                inodes_used=int(32_000_000 * used_pct / 300),
                inodes_free=32_000_000 - int(32_000_000 * used_pct / 300),
                inodes_used_pct=round(used_pct / 3, 1),
            ),
        )

    async def probe(self, workers: Sequence[Worker]) -> list[Probe]:
        self.tick += 1
        probes: list[Probe] = []
        for number, worker in enumerate(workers):
            # A real fleet's answers arrive one by one, each in a turn of the event loop.
            await asyncio.sleep(0)
            if worker.worker_id in self.unreachable:
                probes.append(Probe(worker.worker_id, None, None, "connection refused (simulated)"))
            else:
                probes.append(
                    Probe(worker.worker_id, self.snapshot(worker, number), 20.0 + number % 40, None)
                )
        return probes
