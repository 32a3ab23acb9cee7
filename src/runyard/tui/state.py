"""What the console knows right now: workers, their latest probe and GPU history, runs, alerts.

Plain data, no Textual and no I/O: messages from the controller's workers update it, and
views read it. GPU history is kept in fixed-size rings, so a console left open for a week
uses the same memory as one opened a minute ago.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runyard.core.fleet.telemetry import GpuSample, WorkerSnapshot
from runyard.core.models import Run, RunStatus, Worker

# Samples kept per GPU and per worker: 180 x 2 s = 6 minutes, 15 minutes at 5 s.
HISTORY_SAMPLES = 180
BUSY_UTIL_PCT = 5.0


class AlertLike(Protocol):
    """What the Alerts view needs of a patrol finding (core.patrol.Alert satisfies it)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def message(self) -> str: ...
    @property
    def fix(self) -> str: ...
    @property
    def first_seen(self) -> str: ...


@dataclass(frozen=True)
class Probe:
    """One worker's telemetry probe: the snapshot, or why there is none."""

    worker: str
    snapshot: WorkerSnapshot | None
    latency_ms: float | None
    error: str | None


@dataclass
class GpuTrace:
    """The recent history of one GPU, one ring per chart."""

    util: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    memory_pct: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    power_w: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    sm_clock_mhz: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))

    def push(self, gpu: GpuSample) -> None:
        self.util.append(_number(gpu.util_pct))
        self.memory_pct.append(memory_pct(gpu))
        self.power_w.append(_number(gpu.power_w))
        self.sm_clock_mhz.append(_number(gpu.sm_clock_mhz))


def _number(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def memory_pct(gpu: GpuSample) -> float | None:
    if gpu.mem_used_mib is None or not gpu.mem_total_mib:
        return None
    return 100.0 * gpu.mem_used_mib / gpu.mem_total_mib


def gpu_busy(gpu: GpuSample, holders: int) -> bool:
    """A GPU counts as busy when a process holds it or it reports real utilisation."""
    return holders > 0 or (gpu.util_pct is not None and gpu.util_pct >= BUSY_UTIL_PCT)


@dataclass
class WorkerState:
    """One worker of workers.yaml and what the console last saw of it."""

    worker: Worker
    snapshot: WorkerSnapshot | None = None
    latency_ms: float | None = None
    error: str | None = None
    probed_at: float | None = None
    traces: dict[int, GpuTrace] = field(default_factory=dict)
    util_trend: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    probes: int = 0  # bumped by every probe, so a view can tell what it has already drawn

    @property
    def name(self) -> str:
        return self.worker.worker_id

    @property
    def reachable(self) -> bool:
        return self.snapshot is not None

    @property
    def probed(self) -> bool:
        return self.probed_at is not None

    def gpus(self) -> list[GpuSample]:
        return list(self.snapshot.gpus) if self.snapshot else []

    def holders_by_gpu(self) -> Counter[int]:
        """How many compute processes hold each GPU (by index)."""
        counts: Counter[int] = Counter()
        if self.snapshot:
            for process in self.snapshot.gpu_processes:
                if process.gpu_index is not None:
                    counts[process.gpu_index] += 1
        return counts

    def busy_gpus(self) -> int:
        holders = self.holders_by_gpu()
        return sum(1 for gpu in self.gpus() if gpu_busy(gpu, holders[gpu.index or 0]))

    def apply(self, probe: Probe, now: float) -> None:
        self.snapshot = probe.snapshot
        self.latency_ms = probe.latency_ms
        self.error = probe.error
        self.probed_at = now
        self.probes += 1
        gpus = self.gpus()
        for gpu in gpus:
            self.traces.setdefault(gpu.index or 0, GpuTrace()).push(gpu)
        utils = [float(g.util_pct) for g in gpus if g.util_pct is not None]
        self.util_trend.append(sum(utils) / len(utils) if utils else None)


@dataclass(frozen=True)
class ConsoleError:
    """A failure the console noticed: when (epoch seconds) and what, as the operator reads it."""

    at: float
    text: str


@dataclass(frozen=True)
class Summary:
    """The header's numbers."""

    workers: int
    enabled: int
    reachable: int
    gpus: int
    gpus_busy: int
    runs_by_status: dict[str, int]
    burn_dph: float
    alerts: int
    critical: int
    spent_today: float | None = None  # the Vast cost ledger's today, when it has any


class ConsoleState:
    """The console's model; updated from messages on the UI thread only."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}
        self.runs: list[Run] = []
        self.alerts: list[AlertLike] = []
        self.spent_today: float | None = None
        self.auto_dispatch = False
        self.fleet_version = 0  # bumped on every change a view may need to redraw
        self.runs_version = 0
        self.alerts_version = 0
        self.last_probe_at: float | None = None
        self.last_check_at: float | None = None

    # ------------------------------------------------------------ updates

    def set_workers(self, workers: Sequence[Worker]) -> None:
        """Adopt workers.yaml's list and order, keeping each known worker's history."""
        fresh: dict[str, WorkerState] = {}
        for worker in workers:
            state = self.workers.get(worker.worker_id) or WorkerState(worker)
            state.worker = worker
            fresh[worker.worker_id] = state
        self.workers = fresh
        self.fleet_version += 1

    def apply_probes(self, probes: Iterable[Probe], now: float | None = None) -> None:
        moment = time.time() if now is None else now
        for probe in probes:
            state = self.workers.get(probe.worker)
            if state is not None:
                state.apply(probe, moment)
        self.last_probe_at = moment
        self.fleet_version += 1

    def set_runs(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)
        self.runs_version += 1
        self.fleet_version += 1  # the fleet view shows each worker's runs

    def set_alerts(self, alerts: Sequence[AlertLike]) -> None:
        self.alerts = list(alerts)
        self.alerts_version += 1
        self.fleet_version += 1

    # ------------------------------------------------------------ queries

    def run(self, run_id: str) -> Run | None:
        return next((run for run in self.runs if run.id == run_id), None)

    def active_runs_by_worker(self) -> dict[str, list[Run]]:
        grouped: dict[str, list[Run]] = {}
        for run in self.runs:
            if run.is_active and run.worker:
                grouped.setdefault(run.worker, []).append(run)
        return grouped

    def alerts_by_worker(self) -> Counter[str]:
        return Counter(alert.worker for alert in self.alerts)

    def burn_dph(self) -> float:
        """$/hr of the enabled, reachable workers that have a price (rented boxes)."""
        return sum(
            ws.worker.price_dph or 0.0
            for ws in self.workers.values()
            if ws.worker.enabled and ws.reachable and ws.worker.price_dph
        )

    def summary(self) -> Summary:
        enabled = [ws for ws in self.workers.values() if ws.worker.enabled]
        counts = Counter(run.status.value for run in self.runs)
        return Summary(
            workers=len(self.workers),
            enabled=len(enabled),
            reachable=sum(1 for ws in enabled if ws.reachable),
            gpus=sum(len(ws.gpus()) for ws in enabled),
            gpus_busy=sum(ws.busy_gpus() for ws in enabled),
            runs_by_status={s.value: counts[s.value] for s in RunStatus if counts[s.value]},
            burn_dph=self.burn_dph(),
            alerts=len(self.alerts),
            critical=sum(1 for alert in self.alerts if alert.severity == "critical"),
            spent_today=self.spent_today,
        )
