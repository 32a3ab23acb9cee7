"""Synthetic telemetry: snapshots computed in process from a tick counter (SIMULATED).

For the console's benchmark (bench/console_latency.py) and its snapshot tests: a hundred
workers cost nothing to probe, and every run sees the same numbers. Nothing is reached:
the workers' SSH hosts are under a reserved TLD (`.sim.invalid`) that never resolves.
The demo fleet itself is `runyard.sim.fleet` (real SSH servers on loopback).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from runyard.core.fleet.telemetry import DiskUsage, GpuProcess, GpuSample, WorkerSnapshot
from runyard.core.models import Resources, SSHSettings, Worker
from runyard.sim.catalog import H100_80GB
from runyard.tui.state import AlertLike, Probe  # plain data, no Textual

SIM_HOST_SUFFIX = ".sim.invalid"  # a reserved TLD: never resolves, so never a real box


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
                    name=H100_80GB.name,
                    uuid=uuid,
                    util_pct=round(70 + 29 * wave) if busy else 0,
                    mem_used_mib=round(65000 * (0.8 + 0.2 * wave)) if busy else 3,
                    mem_total_mib=H100_80GB.memory_total_mib,
                    power_w=round(450 + 230 * wave, 1) if busy else 70.0,
                    power_limit_w=H100_80GB.power_limit_w,
                    temp_c=round(60 + 15 * wave) if busy else 33,
                    sm_clock_mhz=round(1800 + 170 * wave) if busy else 210,
                    sm_clock_max_mhz=H100_80GB.sm_clock_max_mhz,
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
