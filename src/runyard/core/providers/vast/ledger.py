"""The cost ledger: what each Vast instance has cost, per day and per project.

Every time runyard lists the account's instances (instances, reconcile, the watcher,
`runyard cost`) it appends to `.runyard/vast-ledger.jsonl` what changed: an instance's
state, its $/hour and its storage $/hour, and "gone" once the API stops listing it. An
instance seen for the first time past loading is taken to have run since its `start_date`
(Vast bills from the rental). Between two observations the earlier state is assumed.

Cost = $/hour x hours running + storage $/hour x hours stopped (a stopped box bills its
disk). Running time is split between the projects of the runs on the box at that moment
(equally among concurrent runs), and `(idle)` when nothing ran; storage while stopped is
`(stopped)`. Days are UTC days.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runyard.core.models import Run, Worker
from runyard.core.providers.base import InstanceState, ProviderInstance
from runyard.core.providers.vast.registry import workers_by_instance
from runyard.core.store.events import EventLog
from runyard.core.store.workspace_store import WorkspaceStore

LEDGER_FILE = "vast-ledger.jsonl"
GONE = "gone"
IDLE = "(idle)"
STOPPED = "(stopped)"
NO_PROJECT = "(no project)"
_DAY = 86400.0


def ledger_path(store: WorkspaceStore) -> Path:
    return store.workspace.state_dir / LEDGER_FILE


@dataclass(frozen=True)
class Observation:
    """One ledger line: from `t` on, the instance was in `state` at these rates."""

    t: float
    instance_id: int
    state: str  # an InstanceState value, or "gone"
    dph: float
    storage_dph: float
    worker: str | None = None
    gpu: str = ""

    @property
    def rates(self) -> tuple[str, float, float]:
        return self.state, round(self.dph, 6), round(self.storage_dph, 6)

    @property
    def burn_dph(self) -> float:
        """$/hour in this state: the full price while running, the disk otherwise."""
        if self.state == GONE:
            return 0.0
        if self.state in (InstanceState.RUNNING.value, InstanceState.UNKNOWN.value):
            return self.dph
        return self.storage_dph


def read_ledger(path: Path) -> list[Observation]:
    found: list[Observation] = []
    for record in EventLog(path).read():
        try:
            found.append(
                Observation(
                    t=float(record["t"]),
                    instance_id=int(record["id"]),
                    state=str(record["state"]),
                    dph=float(record.get("dph") or 0.0),
                    storage_dph=float(record.get("storage_dph") or 0.0),
                    worker=record.get("worker"),
                    gpu=str(record.get("gpu") or ""),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a torn or foreign line: skipped, as the events log does
    return found


def changes(
    previous: Mapping[int, Observation],
    instances: Iterable[ProviderInstance],
    workers: Sequence[Worker],
    now: float,
) -> list[Observation]:
    """What to append after seeing `instances` at `now` (pure)."""
    owners = workers_by_instance(workers)
    out: list[Observation] = []
    seen: set[int] = set()
    for instance in instances:
        seen.add(instance.id)
        worker = owners[instance.id][0].worker_id if instance.id in owners else None
        current = Observation(
            now, instance.id, instance.state.value, instance.price_dph, instance.storage_dph,
            worker, instance.gpu_name,
        )  # fmt: skip
        last = previous.get(instance.id)
        if last is None or last.state == GONE:
            started = instance.started_at
            if (
                started is not None
                and started < now
                and instance.state is not InstanceState.PROVISIONING
            ):
                out.append(
                    Observation(
                        started,
                        instance.id,
                        InstanceState.RUNNING.value,
                        instance.price_dph,
                        instance.storage_dph,
                        worker,
                        instance.gpu_name,
                    )
                )
                if instance.state is InstanceState.RUNNING:
                    continue
            out.append(current)
        elif last.rates != current.rates or (worker and worker != last.worker):
            out.append(current)
    for instance_id, last in previous.items():
        if instance_id not in seen and last.state != GONE:
            out.append(Observation(now, instance_id, GONE, 0.0, 0.0, last.worker, last.gpu))
    return out


def latest(observations: Iterable[Observation]) -> dict[int, Observation]:
    last: dict[int, Observation] = {}
    for obs in sorted(observations, key=lambda o: o.t):
        last[obs.instance_id] = obs
    return last


def observe(
    store: WorkspaceStore,
    instances: Sequence[ProviderInstance],
    workers: Sequence[Worker] | None = None,
    now: float | None = None,
) -> None:
    """Record a full listing of the account's instances in the ledger (`workers`: the
    caller's already parsed workers.yaml, to spare a second parse)."""
    now = time.time() if now is None else now
    path = ledger_path(store)
    log = EventLog(path)
    known = store.workers() if workers is None else workers
    for obs in changes(latest(read_ledger(path)), instances, known, now):
        log.append("vast.instance", **_record(obs))


def record_gone(store: WorkspaceStore, instance_id: int, now: float | None = None) -> None:
    """An instance runyard destroyed: it stops costing from now."""
    path = ledger_path(store)
    last = latest(read_ledger(path)).get(instance_id)
    if last is None or last.state == GONE:
        return
    obs = Observation(
        time.time() if now is None else now, instance_id, GONE, 0.0, 0.0, last.worker, last.gpu
    )
    EventLog(path).append("vast.instance", **_record(obs))


def _record(obs: Observation) -> dict[str, Any]:
    return {
        "t": round(obs.t, 3),
        "id": obs.instance_id,
        "state": obs.state,
        "dph": obs.dph,
        "storage_dph": obs.storage_dph,
        "worker": obs.worker,
        "gpu": obs.gpu,
    }


# ---------------------------------------------------------------- costs


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class RunSpan:
    start: float
    end: float
    project: str


def run_spans(runs: Iterable[Run], worker: str, now: float) -> list[RunSpan]:
    """When each attempt on `worker` ran (current attempts and those in history)."""
    spans: list[RunSpan] = []
    for run in runs:
        project = run.project or NO_PROJECT
        attempts: list[Mapping[str, Any]] = [h for h in run.history if h.get("worker") == worker]
        if run.worker == worker:
            attempts.append(
                {"started_at": run.started_at or run.dispatched_at, "ended_at": run.ended_at}
            )
        for attempt in attempts:
            start = parse_time(attempt.get("started_at"))
            if start is None:
                continue
            end = parse_time(attempt.get("ended_at")) or now
            if end > start:
                spans.append(RunSpan(start, end, project))
    return spans


def day_of(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


@dataclass
class InstanceCost:
    instance_id: int
    worker: str | None
    gpu: str
    state: str
    burn_dph: float
    hours_running: float = 0.0
    hours_stopped: float = 0.0
    cost: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "worker": self.worker,
            "gpu_name": self.gpu,
            "state": self.state,
            "burn_dph": round(self.burn_dph, 6),
            "hours_running": round(self.hours_running, 4),
            "hours_stopped": round(self.hours_stopped, 4),
            "cost": round(self.cost, 4),
        }


@dataclass
class CostReport:
    instances: list[InstanceCost] = field(default_factory=list)
    per_day: dict[str, float] = field(default_factory=dict)
    per_project: dict[str, float] = field(default_factory=dict)
    now: float = 0.0

    @property
    def total(self) -> float:
        return sum(i.cost for i in self.instances)

    @property
    def burn_dph(self) -> float:
        """What the account costs per hour right now (stopped boxes' disks included)."""
        return sum(i.burn_dph for i in self.instances)

    @property
    def today(self) -> float:
        return self.per_day.get(day_of(self.now), 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": round(self.total, 4),
            "today": round(self.today, 4),
            "burn_dph": round(self.burn_dph, 6),
            "per_day": {day: round(cost, 4) for day, cost in sorted(self.per_day.items())},
            "per_project": {
                name: round(cost, 4)
                for name, cost in sorted(self.per_project.items(), key=lambda kv: -kv[1])
            },
            "instances": [i.to_json() for i in self.instances],
        }


def compute_costs(
    observations: Sequence[Observation],
    runs: Sequence[Run],
    workers: Sequence[Worker],
    now: float,
) -> CostReport:
    """The ledger folded into costs per instance, per UTC day and per project (pure)."""
    report = CostReport(now=now)
    per_day: dict[str, float] = defaultdict(float)
    per_project: dict[str, float] = defaultdict(float)
    owners = workers_by_instance(workers)
    by_instance: dict[int, list[Observation]] = defaultdict(list)
    for obs in sorted(observations, key=lambda o: o.t):
        by_instance[obs.instance_id].append(obs)
    for instance_id, history in sorted(by_instance.items()):
        last = history[-1]
        worker = last.worker or (
            owners[instance_id][0].worker_id if instance_id in owners else None
        )
        spans = run_spans(runs, worker, now) if worker else []
        item = InstanceCost(instance_id, worker, last.gpu, last.state, last.burn_dph)
        ends = [obs.t for obs in history[1:]] + [now if last.state != GONE else last.t]
        for obs, end in zip(history, ends, strict=True):
            if end <= obs.t or obs.burn_dph <= 0:
                continue
            running = obs.state in (InstanceState.RUNNING.value, InstanceState.UNKNOWN.value)
            hours = (end - obs.t) / 3600.0
            if running:
                item.hours_running += hours
            else:
                item.hours_stopped += hours
            for start, stop, who in _attribute(obs.t, end, spans if running else [], running):
                cost = obs.burn_dph * (stop - start) / 3600.0
                item.cost += cost
                per_day[day_of(start)] += cost
                for project, share in who.items():
                    per_project[project] += cost * share
        report.instances.append(item)
    report.per_day = dict(per_day)
    report.per_project = dict(per_project)
    return report


def _attribute(
    start: float, end: float, spans: Sequence[RunSpan], running: bool
) -> list[tuple[float, float, dict[str, float]]]:
    """Split [start, end) at UTC midnights and run boundaries; each piece's project shares."""
    cuts = {start, end}
    midnight = (start // _DAY + 1) * _DAY
    while midnight < end:
        cuts.add(midnight)
        midnight += _DAY
    for span in spans:
        for t in (span.start, span.end):
            if start < t < end:
                cuts.add(t)
    points = sorted(cuts)
    pieces: list[tuple[float, float, dict[str, float]]] = []
    for a, b in itertools.pairwise(points):
        if not running:
            pieces.append((a, b, {STOPPED: 1.0}))
            continue
        active = [s.project for s in spans if s.start <= a and s.end >= b]
        if not active:
            pieces.append((a, b, {IDLE: 1.0}))
            continue
        shares: dict[str, float] = defaultdict(float)
        for project in active:
            shares[project] += 1.0 / len(active)
        pieces.append((a, b, dict(shares)))
    return pieces


def cost_report(store: WorkspaceStore, now: float | None = None) -> CostReport:
    """Costs from the ledger alone (no API call): what the console header shows."""
    now = time.time() if now is None else now
    return compute_costs(read_ledger(ledger_path(store)), store.runs(), store.workers(), now)
