"""Stop, start and destroy Vast instances, with stop and destroy behind the teardown gate.

A tracked instance (a worker in workers.yaml names it) goes through
`runyard.core.teardown`: the Iron Law refuses while any run there is unfinished, unpulled
or unverified, and the operator must name the worker; only then is the API's stop or
destroy called. An untracked instance has no runs runyard knows of; the operator must type
its instance id. Either way the danger clocks are shown first: a stopped box still bills
its disk, and destroy deletes the disk for good.

Start is not a teardown: it resumes billing, then waits for SSH and writes the (often
new) host and port into workers.yaml and enables the worker again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from runyard.core.errors import InputError, OperationalError
from runyard.core.models import Worker
from runyard.core.profiles import PlatformProfile, TeardownVerb, load_profile, teardown_consequences
from runyard.core.providers.base import Compute, ComputeWithStopSupport, ProviderInstance
from runyard.core.providers.vast.ledger import record_gone
from runyard.core.providers.vast.reconcile import ReconcilePlan, WorkerPatch, apply_plan
from runyard.core.providers.vast.registry import VAST_PLATFORM, worker_for_instance
from runyard.core.providers.vast.rent import Progress, no_progress, wait_for_ssh, wait_until_running
from runyard.core.providers.vast.settings import VastSettings
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.teardown import (
    ProviderAction,
    TeardownAction,
    TeardownPlan,
    execute_teardown,
    plan_teardown,
)

INTERRUPTIBLE_CLOCK = "interruptible-preemption"  # the vast profile's clock for bid boxes


def vast_profile(store: WorkspaceStore) -> PlatformProfile:
    return load_profile(store.workspace.profiles_dir, VAST_PLATFORM)


@dataclass(frozen=True)
class InstanceTeardownPlan:
    """What stopping or destroying one instance means, and whether the gate allows it."""

    instance_id: int
    action: TeardownAction
    instance: ProviderInstance | None  # None: the API no longer lists it
    worker: str | None
    gate: TeardownPlan | None  # the Iron Law's verdict when a worker tracks the instance
    consequences: tuple[str, ...]
    dangers: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return self.gate.allowed if self.gate is not None else True

    @property
    def confirm_word(self) -> str:
        """What the operator types to approve: the worker's name, or the instance id."""
        return self.worker if self.worker is not None else str(self.instance_id)

    def refusal(self) -> str:
        return self.gate.refusal() if self.gate is not None else ""

    @property
    def cost_so_far(self) -> float | None:
        i = self.instance
        if i is None or i.started_at is None:
            return None
        return i.price_dph * max(0.0, time.time() - i.started_at) / 3600.0


async def plan_instance_teardown(
    store: WorkspaceStore, compute: Compute, instance_id: int, action: TeardownAction
) -> InstanceTeardownPlan:
    """The gate's plan (one API call for the instance's live state and age)."""
    instance = await compute.get_instance(instance_id)
    profile = vast_profile(store)
    worker = worker_for_instance(store.workers(), instance_id)
    uptime = (
        time.time() - instance.started_at
        if instance is not None and instance.started_at is not None
        else None
    )
    gate = None
    if worker is not None:
        gate = plan_teardown(worker, store.runs(), profile, action, uptime)
    bid = instance is not None and instance.interruptible
    dangers = [
        clock.message
        for clock in profile.standing_clocks()
        if bid or clock.name != INTERRUPTIBLE_CLOCK
    ]
    if instance is not None and action is TeardownAction.STOP and instance.storage_dph > 0:
        dangers.insert(
            0,
            f"Stopped, instance {instance_id} still bills ${instance.storage_dph:.4f}/h "
            f"(${instance.storage_dph * 24:.2f}/day) for its {instance.disk_gb or '?'} GB disk.",
        )
    return InstanceTeardownPlan(
        instance_id=instance_id,
        action=action,
        instance=instance,
        worker=worker.worker_id if worker else None,
        gate=gate,
        consequences=tuple(teardown_consequences(profile, action.value)),
        dangers=tuple(dangers),
    )


async def apply_verb(store: WorkspaceStore, compute: Compute, instance_id: int, verb: str) -> str:
    """Call the API's stop or destroy (the gate has already passed); one line back."""
    if verb == "destroy":
        existed = await compute.destroy_instance(instance_id)
        record_gone(store, instance_id)
        store.events.append("vast.destroyed", instance_id=instance_id, existed=existed)
        if not existed:
            return f"instance {instance_id} was already gone"
        return f"instance {instance_id} destroyed: its disk is deleted and billing has stopped"
    if verb == "stop":
        if not isinstance(compute, ComputeWithStopSupport):
            raise InputError(f"{compute.name} cannot stop instances")
        await compute.stop_instance(instance_id)
        store.events.append("vast.stopped", instance_id=instance_id)
        return (
            f"instance {instance_id} stopped: the GPU meter is off, the disk still bills "
            f"until `runyard vast destroy {instance_id}`"
        )
    raise InputError(f"no Vast action {verb!r}")


def provider_action(store: WorkspaceStore, compute: Compute) -> ProviderAction:
    """The gate's hook: runs only after `core.teardown` has authorized the action."""

    async def act(worker: Worker, verb: TeardownVerb) -> str:
        if worker.instance_id is None:
            raise InputError(f"worker {worker.worker_id} has no instance_id")
        return await apply_verb(store, compute, worker.instance_id, verb.verb)

    return act


async def execute_instance_teardown(
    store: WorkspaceStore,
    compute: Compute,
    instance_id: int,
    action: TeardownAction,
    typed: str | None,
) -> str:
    """Re-plan from the files, enforce the gate and the typed approval, then act."""
    plan = await plan_instance_teardown(store, compute, instance_id, action)
    if plan.worker is not None:
        uptime = None
        if plan.instance is not None and plan.instance.started_at is not None:
            uptime = time.time() - plan.instance.started_at
        outcome = await execute_teardown(
            store,
            plan.worker,
            action,
            typed,
            uptime_s=uptime,
            provider_action=provider_action(store, compute),
        )
        message = outcome.provider_message or ""
        return f"{message}; worker {plan.worker} disabled in workers.yaml"
    if typed != str(instance_id):
        raise InputError(
            f"type the instance id ({instance_id}) to {action.value} it; got {typed!r}"
        )
    if plan.instance is None:
        return f"instance {instance_id} is not on your account (nothing to {action.value})"
    return await apply_verb(store, compute, instance_id, action.value)


async def start_instance(
    store: WorkspaceStore,
    compute: Compute,
    settings: VastSettings,
    instance_id: int,
    progress: Progress = no_progress,
) -> Worker | None:
    """Start a stopped instance, wait for SSH, and point its worker at the live endpoint."""
    if not isinstance(compute, ComputeWithStopSupport):
        raise InputError(f"{compute.name} cannot start instances")
    await compute.start_instance(instance_id)
    store.events.append("vast.started", instance_id=instance_id)
    progress(f"instance {instance_id}: start requested (the GPU meter runs again)")
    instance = await wait_until_running(
        compute, instance_id, settings.boot_timeout_seconds, settings.poll_seconds, progress
    )
    assert instance.ssh is not None
    await wait_for_ssh(
        instance.ssh.host, instance.ssh.port, settings.boot_timeout_seconds, settings.poll_seconds
    )
    worker = worker_for_instance(store.workers(), instance_id)
    if worker is None:
        return None
    if worker.ssh is None:
        raise OperationalError(f"worker {worker.worker_id} has no ssh settings")
    plan = ReconcilePlan()
    plan.patches[worker.worker_id] = WorkerPatch(
        worker.worker_id,
        instance_id,
        host=instance.ssh.host if instance.ssh.host != worker.ssh.host else None,
        port=instance.ssh.port if instance.ssh.port != worker.ssh.port else None,
        enabled=True if not worker.enabled else None,
    )
    for line in apply_plan(store, plan, store.settings().runs.retry_lost):
        progress(line)
    return store.worker(worker.worker_id)
