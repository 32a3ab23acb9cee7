"""Live Vast instances against workers.yaml: the inventory, and reconcile of drift.

Vast moves a box's SSH port (and sometimes its host) when it restarts, and instances die or
exit under runs. `plan_reconcile` is pure: from the workers, the live instances and the
queue it lists what differs and the patch that fixes it. `apply_plan` writes the patch:
workers.yaml through `store.edit_workers` (comments and key order kept), and runs on a
gone or exited instance become `lost` in one queue transaction (requeued when the retry
policy says so). One API call lists every instance, so reconcile costs the same for 1 or
100 boxes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runyard.core.models import Run, RunStatus, Worker
from runyard.core.providers.base import (
    DOWN_STATES,
    Compute,
    InstanceState,
    ProviderInstance,
)
from runyard.core.providers.vast.ledger import observe
from runyard.core.providers.vast.registry import is_vast_worker, workers_by_instance
from runyard.core.runs import archive_attempt, set_status
from runyard.core.store.workers_file import parse_workers
from runyard.core.store.workspace_store import WorkspaceStore


class Drift(StrEnum):
    """What reconcile found for one worker or instance."""

    OK = "ok"
    PORT_CHANGED = "port_changed"
    HOST_CHANGED = "host_changed"
    PRICE_CHANGED = "price_changed"
    GONE = "gone"  # destroyed: the API no longer lists it
    DOWN = "down"  # stopped or exited: nothing runs there
    STARTING = "starting"  # loading; nothing to fix yet
    UNTRACKED = "untracked"  # billing, and no worker knows it
    IDLE_BILLING = "idle_billing"  # running and billing, but its worker is disabled
    DUPLICATE = "duplicate"  # two workers claim one instance


@dataclass(frozen=True)
class Finding:
    drift: Drift
    instance_id: int
    worker: str | None
    detail: str
    fixable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "drift": self.drift.value,
            "instance_id": self.instance_id,
            "worker": self.worker,
            "detail": self.detail,
            "fixable": self.fixable,
        }


@dataclass
class WorkerPatch:
    """Fields to set on one workers.yaml entry (None: leave as is)."""

    worker: str
    instance_id: int
    host: str | None = None
    port: int | None = None
    price_dph: float | None = None
    enabled: bool | None = None

    def changes(self) -> dict[str, Any]:
        found = {
            "ssh.host": self.host,
            "ssh.port": self.port,
            "price_dph": self.price_dph,
            "enabled": self.enabled,
        }
        return {key: value for key, value in found.items() if value is not None}


@dataclass
class ReconcilePlan:
    findings: list[Finding] = field(default_factory=list)
    patches: dict[str, WorkerPatch] = field(default_factory=dict)
    lost_runs: dict[str, str] = field(default_factory=dict)  # run id -> reason
    live: int = 0
    tracked: int = 0

    @property
    def needs_fix(self) -> bool:
        return bool(self.patches or self.lost_runs)

    def patch(self, worker: Worker) -> WorkerPatch:
        assert worker.instance_id is not None
        return self.patches.setdefault(
            worker.worker_id, WorkerPatch(worker.worker_id, worker.instance_id)
        )


def _price_differs(a: float | None, b: float) -> bool:
    return a is None or abs(a - b) > 1e-6


def plan_reconcile(
    workers: Sequence[Worker], instances: Sequence[ProviderInstance], runs: Sequence[Run]
) -> ReconcilePlan:
    """Every difference between workers.yaml and the live instances, and its fix (pure)."""
    plan = ReconcilePlan(live=len(instances))
    live = {instance.id: instance for instance in instances}
    claimed = workers_by_instance(workers)
    plan.tracked = sum(len(ws) for ws in claimed.values())
    active: dict[str, list[Run]] = {}
    for run in runs:
        if run.is_active and run.worker is not None:
            active.setdefault(run.worker, []).append(run)

    for instance_id, owners in sorted(claimed.items()):
        if len(owners) > 1:
            names = ", ".join(w.worker_id for w in owners)
            plan.findings.append(
                Finding(Drift.DUPLICATE, instance_id, owners[0].worker_id,
                        f"workers {names} all claim instance {instance_id}; keep one")
            )  # fmt: skip
        for worker in owners:
            _reconcile_worker(plan, worker, live.get(instance_id), active.get(worker.worker_id, []))

    for instance in instances:
        if instance.id not in claimed:
            billing = "billing" if instance.state is not InstanceState.EXITED else "exited"
            plan.findings.append(
                Finding(
                    Drift.UNTRACKED,
                    instance.id,
                    None,
                    f"{billing} at ${_burn(instance):.4f}/h ({instance.status_text}) and no "
                    f"worker knows it: `runyard worker add NAME --vast-instance {instance.id}` "
                    f"or `runyard vast destroy {instance.id}`",
                )
            )
    return plan


def _burn(instance: ProviderInstance) -> float:
    """What the instance costs per hour right now."""
    if instance.state in (InstanceState.RUNNING, InstanceState.UNKNOWN):
        return instance.price_dph
    return instance.storage_dph


def _reconcile_worker(
    plan: ReconcilePlan, worker: Worker, instance: ProviderInstance | None, runs: list[Run]
) -> None:
    instance_id = worker.instance_id
    assert instance_id is not None
    name = worker.worker_id
    if instance is None or instance.state in DOWN_STATES:
        what = "is gone (destroyed)" if instance is None else f"is {instance.status_text}"
        drift = Drift.GONE if instance is None else Drift.DOWN
        parts = [f"instance {instance_id} {what}"]
        if worker.enabled:
            plan.patch(worker).enabled = False
            parts.append("worker -> enabled: false")
        for run in runs:
            plan.lost_runs[run.id] = f"instance {instance_id} {what}"
            parts.append(f"run {run.id} -> lost")
        fixable = worker.enabled or bool(runs)
        plan.findings.append(Finding(drift, instance_id, name, "; ".join(parts), fixable))
        return
    if instance.state is InstanceState.PROVISIONING or instance.ssh is None:
        plan.findings.append(
            Finding(Drift.STARTING, instance_id, name, f"instance {instance_id} is "
                    f"{instance.status_text}; SSH not ready yet")
        )  # fmt: skip
        return
    current = worker.ssh
    fixed = False
    if current is None or current.host != instance.ssh.host:
        was = current.host if current else "(none)"
        plan.patch(worker).host = instance.ssh.host
        plan.findings.append(
            Finding(Drift.HOST_CHANGED, instance_id, name,
                    f"HOST CHANGED: yaml={was} live={instance.ssh.host}", True)
        )  # fmt: skip
        fixed = True
    if current is None or current.port != instance.ssh.port:
        was_port = current.port if current else None
        plan.patch(worker).port = instance.ssh.port
        plan.findings.append(
            Finding(Drift.PORT_CHANGED, instance_id, name,
                    f"PORT CHANGED: yaml={was_port} live={instance.ssh.port}", True)
        )  # fmt: skip
        fixed = True
    if instance.state is InstanceState.RUNNING and _price_differs(
        worker.price_dph, instance.price_dph
    ):
        plan.patch(worker).price_dph = round(instance.price_dph, 6)
        plan.findings.append(
            Finding(Drift.PRICE_CHANGED, instance_id, name,
                    f"price: yaml={worker.price_dph} live={instance.price_dph:.4f}/h", True)
        )  # fmt: skip
        fixed = True
    if not worker.enabled and instance.state is InstanceState.RUNNING:
        plan.findings.append(
            Finding(
                Drift.IDLE_BILLING,
                instance_id,
                name,
                f"worker is disabled but instance {instance_id} runs and bills "
                f"${instance.price_dph:.4f}/h: `runyard vast start {instance_id}` re-enables "
                f"it, `runyard vast destroy {instance_id}` ends it",
            )
        )
    elif not fixed:
        plan.findings.append(
            Finding(Drift.OK, instance_id, name,
                    f"{instance.status_text} {instance.ssh.host}:{instance.ssh.port}")
        )  # fmt: skip


def apply_plan(store: WorkspaceStore, plan: ReconcilePlan, retry_lost: int) -> list[str]:
    """Write the plan's fixes; returns one line per change made.

    Each patch is applied only if the entry still names the same instance (a human may
    have edited the file since the plan was made); runs are marked lost only if they are
    still active on that worker.
    """
    changes: list[str] = []
    if plan.patches:
        patches = plan.patches
        store.edit_workers(
            lambda entries: changes.extend(_patch_entries(entries, patches)),
            "vast.reconciled",
            changes=changes,  # filled by the edit before the event is written
        )
    return changes + _lose_runs(store, plan, retry_lost)


def _patch_entries(entries: Any, patches: Mapping[str, WorkerPatch]) -> list[str]:
    done: list[str] = []
    for entry in entries:
        if not isinstance(entry, MutableMapping):
            continue
        patch = patches.get(str(entry.get("worker_id")))
        if patch is not None and _entry_instance(entry) == patch.instance_id:
            done.extend(_patch_entry(entry, patch))
    return done


def _lose_runs(store: WorkspaceStore, plan: ReconcilePlan, retry_lost: int) -> list[str]:
    """Runs on gone or stopped boxes -> lost, in one queue transaction."""
    if not plan.lost_runs:
        return []
    changes: list[str] = []
    with store.queue_transaction() as runs:
        for run in runs:
            reason = plan.lost_runs.get(run.id)
            if reason is None or not run.is_active:
                continue
            mark_lost(store, run, reason, retry_lost)
            changes.append(f"run {run.id} ({run.name}) -> {run.status.value}: {reason}")
    return changes


class _NothingToWrite(Exception):
    """Raised inside a workers.yaml edit to leave the file untouched."""


def fix_drift(
    store: WorkspaceStore, instances: Sequence[ProviderInstance], retry_lost: int
) -> tuple[ReconcilePlan, list[str], list[Worker]]:
    """Plan and patch under the workspace lock, from one parse of workers.yaml.

    The plan is made from the very tree that is patched, so no edit can slip in between;
    when it has nothing to patch the edit is abandoned and the file is not rewritten.
    """
    runs = store.runs()
    made: list[tuple[ReconcilePlan, list[Worker]]] = []
    changes: list[str] = []

    def edit(entries: Any) -> None:
        workers = parse_workers(store.workspace.workers_path, entries, [])
        plan = plan_reconcile(workers, instances, runs)
        made.append((plan, workers))
        if not plan.patches:
            raise _NothingToWrite
        changes.extend(_patch_entries(entries, plan.patches))

    with contextlib.suppress(_NothingToWrite):
        store.edit_workers(edit, "vast.reconciled", changes=changes)  # filled by the edit
    plan, workers = made[-1]
    return plan, changes + _lose_runs(store, plan, retry_lost), workers


def _entry_instance(entry: Mapping[str, Any]) -> int | None:
    try:
        return int(entry.get("instance_id"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _patch_entry(entry: Any, patch: WorkerPatch) -> list[str]:
    """Set the patch's fields on a round-trip mapping, in place; comments stay put."""
    name = patch.worker
    done: list[str] = []
    ssh = entry.get("ssh")
    if patch.host is not None and isinstance(ssh, MutableMapping):
        done.append(f"{name}: ssh.host {ssh.get('host')} -> {patch.host}")
        ssh["host"] = patch.host
    if patch.port is not None and isinstance(ssh, MutableMapping):
        done.append(f"{name}: ssh.port {ssh.get('port')} -> {patch.port}")
        ssh["port"] = patch.port
    if patch.price_dph is not None:
        done.append(f"{name}: price_dph {entry.get('price_dph')} -> {patch.price_dph}")
        entry["price_dph"] = patch.price_dph
    if patch.enabled is not None:
        done.append(f"{name}: enabled {entry.get('enabled', True)} -> {patch.enabled}")
        entry["enabled"] = patch.enabled
    return done


def mark_lost(store: WorkspaceStore, run: Run, reason: str, retry_lost: int) -> None:
    """An active run whose box is gone becomes lost; the retry policy may requeue it.

    The caller holds the queue transaction. Mirrors what `check` does for a lost run.
    """
    run.error = reason
    set_status(store, run, RunStatus.LOST, reason=reason)
    lost_before = sum(1 for h in run.history if h.get("status") == RunStatus.LOST.value)
    if lost_before + 1 <= retry_lost:
        archive_attempt(run)
        set_status(store, run, RunStatus.PENDING, reason="retry policy: lost run requeued")


# ---------------------------------------------------------------- the inventory


@dataclass(frozen=True)
class InventoryRow:
    """One live instance beside workers.yaml (`vast instances`)."""

    instance: ProviderInstance
    worker: str | None

    @property
    def tracked(self) -> bool:
        return self.worker is not None

    @property
    def burn_dph(self) -> float:
        return _burn(self.instance)

    def to_json(self) -> dict[str, Any]:
        i = self.instance
        return {
            "id": i.id,
            "state": i.state.value,
            "status": i.status_text,
            "gpu_name": i.gpu_name,
            "num_gpus": i.num_gpus,
            "dph": round(i.price_dph, 6),
            "storage_dph": round(i.storage_dph, 6),
            "burn_dph": round(self.burn_dph, 6),
            "ssh_host": i.ssh.host if i.ssh else None,
            "ssh_port": i.ssh.port if i.ssh else None,
            "machine_id": i.machine_id,
            "label": i.label,
            "started_at": i.started_at,
            "tracked": self.tracked,
            "worker": self.worker,
            "flag": None if self.tracked else "untracked",
        }


def inventory(
    workers: Sequence[Worker], instances: Sequence[ProviderInstance]
) -> list[InventoryRow]:
    claimed = workers_by_instance(workers)
    return [
        InventoryRow(i, claimed[i.id][0].worker_id if i.id in claimed else None)
        for i in sorted(instances, key=lambda i: i.id)
    ]


@dataclass
class ReconcileReport:
    plan: ReconcilePlan
    instances: list[ProviderInstance]
    applied: list[str] = field(default_factory=list)
    fixed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "live_instances": self.plan.live,
            "tracked_workers": self.plan.tracked,
            "findings": [f.to_json() for f in self.plan.findings],
            "needs_fix": self.plan.needs_fix and not self.fixed,
            "fixed": self.fixed,
            "applied": self.applied,
        }


async def reconcile(store: WorkspaceStore, compute: Compute, fix: bool) -> ReconcileReport:
    """One API call and one parse of workers.yaml; with `fix`, the patch is written too."""
    instances = await compute.list_instances()
    if fix:
        plan, applied, workers = fix_drift(store, instances, store.settings().runs.retry_lost)
        report = ReconcileReport(plan, instances, applied, fixed=plan.needs_fix)
    else:
        workers = store.workers()
        report = ReconcileReport(plan_reconcile(workers, instances, store.runs()), instances)
    observe(store, instances, workers)
    return report


def has_rented_workers(workers: Iterable[Worker]) -> bool:
    """Whether any worker is a Vast instance (reconcile before dispatch costs nothing else)."""
    return any(is_vast_worker(w) for w in workers)
