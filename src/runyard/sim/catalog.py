"""The simulated demo fleet's boxes: GPU models and the mix of workers (pure data, no I/O).

`demo_specs(n)` deals the templates round-robin, so any fleet size has every kind of box
in it and the first five are one of each: an RTX 4090 tower, a rented 2x A100, the big
8x H100 box, a rented T4 and a CPU-only box. Names start with `sim-` and every note says
SIMULATED, so a demo worker is never mistaken for a real one.
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass
from typing import Any

from runyard.core.models import Resources, SSHSettings, Worker

SIM_PREFIX = "sim-"
SIM_NOTE = "SIMULATED by `runyard demo`"
SIM_WORKSPACE = "~/runyard"


@dataclass(frozen=True)
class GpuModel:
    """A card as the simulated nvidia-smi describes it."""

    name: str
    memory_total_mib: int
    power_limit_w: float
    sm_clock_max_mhz: int


RTX4090 = GpuModel("NVIDIA GeForce RTX 4090", 24564, 450.0, 2520)
A100_80GB = GpuModel("NVIDIA A100-SXM4-80GB", 81920, 400.0, 1410)
H100_80GB = GpuModel("NVIDIA H100 80GB HBM3", 81559, 700.0, 1980)
T4 = GpuModel("Tesla T4", 15360, 70.0, 1590)


@dataclass(frozen=True)
class BoxTemplate:
    """One kind of simulated box: its cards, pool, platform and (for rented ones) price."""

    kind: str
    gpu: GpuModel | None
    gpu_count: int
    pool: str
    platform: str
    slots: int = 1
    price_dph: float | None = None


TEMPLATES: tuple[BoxTemplate, ...] = (
    BoxTemplate("rtx4090", RTX4090, 1, "tailnet", "generic-ssh"),
    BoxTemplate("a100x2", A100_80GB, 2, "vastai", "vast", slots=2, price_dph=2.35),
    BoxTemplate("h100x8", H100_80GB, 8, "tailnet", "generic-ssh", slots=8),
    BoxTemplate("t4", T4, 1, "vastai", "vast", price_dph=0.14),
    BoxTemplate("cpu", None, 0, "tailnet", "generic-ssh", slots=2),
)


@dataclass(frozen=True)
class SimWorkerSpec:
    """One worker of the simulated fleet."""

    name: str
    template: BoxTemplate

    @property
    def gpu_count(self) -> int:
        return self.template.gpu_count if self.template.gpu else 0

    def gpus(self) -> list[dict[str, Any]]:
        """The simulated nvidia-smi's description of this box's cards (unique UUIDs)."""
        model = self.template.gpu
        if model is None:
            return []
        return [
            {
                "name": model.name,
                "memory_total_mib": model.memory_total_mib,
                "power_limit_w": model.power_limit_w,
                "sm_clock_max_mhz": model.sm_clock_max_mhz,
                "uuid": f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'runyard-sim/{self.name}/{i}')}",
            }
            for i in range(self.gpu_count)
        ]

    def describe(self) -> str:
        model = self.template.gpu
        return f"{self.gpu_count}x {model.name}" if model else "CPU only"

    def notes(self) -> str:
        rented = f", rented at ${self.template.price_dph}/h" if self.template.price_dph else ""
        return (
            f"{SIM_NOTE}: a loopback SSH server on this machine, sandbox folder, "
            f"simulated GPUs ({self.describe()}{rented}); not a real box"
        )

    def worker(self, port: int, key_path: str) -> Worker:
        """The workers.yaml entry that reaches this box's SSH server on 127.0.0.1."""
        template = self.template
        return Worker(
            worker_id=self.name,
            kind="ssh",
            worker_pool=template.pool,
            ssh=SSHSettings(host="127.0.0.1", port=port, user=getpass.getuser(), key=key_path),
            workspace=SIM_WORKSPACE,
            resources=Resources(gpu=self.gpu_count),
            slots=template.slots,
            platform=template.platform,
            price_dph=template.price_dph,
            notes=self.notes(),
        )


def demo_specs(count: int) -> list[SimWorkerSpec]:
    """`count` workers, templates dealt round-robin: sim-rtx4090-1, sim-a100x2-1, ..."""
    return [
        SimWorkerSpec(
            f"{SIM_PREFIX}{TEMPLATES[i % len(TEMPLATES)].kind}-{i // len(TEMPLATES) + 1}",
            TEMPLATES[i % len(TEMPLATES)],
        )
        for i in range(count)
    ]


def is_sim_entry(entry: Any) -> bool:
    """Whether a workers.yaml entry (a mapping) was registered by the simulated fleet."""
    notes = entry.get("notes") if hasattr(entry, "get") else None
    return isinstance(notes, str) and notes.startswith(SIM_NOTE)
