"""Vast instances and workers.yaml entries: which worker is which box, and new entries.

A worker is a Vast box when it has an `instance_id` and its platform is `vast` (or unset,
as in research-os files). Every path that creates such a worker (rent, the watcher,
`worker add --vast-instance`) builds it here, so each writes `instance_id`, the pool,
the price and a note saying where the box came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runyard.core.errors import InputError, OperationalError
from runyard.core.models import HealthCommands, Resources, SSHSettings, Worker
from runyard.core.providers.base import InstanceState, Offer, ProviderInstance
from runyard.core.providers.vast.settings import VastSettings
from runyard.core.store.events import utc_now

VAST_PLATFORM = "vast"
_VAST_PLATFORMS = frozenset({None, VAST_PLATFORM})


def is_vast_worker(worker: Worker) -> bool:
    return worker.instance_id is not None and worker.platform in _VAST_PLATFORMS


def workers_by_instance(workers: Iterable[Worker]) -> dict[int, list[Worker]]:
    """Vast workers grouped by instance id (more than one is a finding of reconcile)."""
    found: dict[int, list[Worker]] = {}
    for worker in workers:
        if worker.instance_id is not None and worker.platform in _VAST_PLATFORMS:
            found.setdefault(worker.instance_id, []).append(worker)
    return found


def worker_for_instance(workers: Iterable[Worker], instance_id: int) -> Worker | None:
    owners = workers_by_instance(workers).get(instance_id, [])
    return owners[0] if owners else None


@dataclass(frozen=True)
class Provenance:
    """How a box came to be a worker, for its `notes`."""

    how: str  # "rented", "AUTO-RENTED by the watcher", "added from the live instance"
    offer: Offer | None = None


def describe(instance: ProviderInstance, provenance: Provenance) -> str:
    """The worker's note: when, what, price, DLP/$ and where (research-os style)."""
    offer = provenance.offer
    gpus = f"{instance.num_gpus}x {instance.gpu_name}" if instance.num_gpus else instance.gpu_name
    facts = [gpus or "no GPU", f"${instance.price_dph:.4f}/hr"]
    if offer is not None and offer.dlp_per_dollar is not None:
        facts.append(f"DLP/$={offer.dlp_per_dollar:.1f}")
    where = instance.location or (offer.location if offer else "")
    if where:
        facts.append(where)
    ids = [f"instance {instance.id}"]
    if offer is not None:
        ids.append(f"offer {offer.id}")
    if instance.machine_id is not None:
        ids.append(f"machine {instance.machine_id}")
    return f"{provenance.how} at {utc_now()}. {', '.join(facts)} ({', '.join(ids)})."


def worker_from_instance(
    name: str,
    instance: ProviderInstance,
    settings: VastSettings,
    provenance: Provenance,
    *,
    pool: str | None = None,
    key: str | None = None,
) -> Worker:
    """A workers.yaml entry for a running instance; its SSH endpoint must be known."""
    if instance.ssh is None:
        raise OperationalError(
            f"instance {instance.id} has no SSH endpoint yet ({instance.status_text}); "
            "wait until it runs"
        )
    if instance.state is not InstanceState.RUNNING:
        raise OperationalError(f"instance {instance.id} is {instance.status_text}, not running")
    return Worker(
        worker_id=name,
        kind="ssh",
        enabled=True,
        worker_pool=pool or settings.pool,
        ssh=SSHSettings(
            host=instance.ssh.host,
            port=instance.ssh.port,
            user=settings.ssh_user,
            key=key or settings.ssh_key,
        ),
        workspace=settings.workspace,
        resources=Resources(gpu=instance.num_gpus, disk_gb=instance.disk_gb),
        health=HealthCommands(heartbeat_command="echo ok", busy_command="pgrep -f python || true"),
        instance_id=instance.id,
        platform=VAST_PLATFORM,
        price_dph=round(instance.price_dph, 6),
        notes=describe(instance, provenance),
    )


def check_not_tracked(workers: Iterable[Worker], instance_id: int) -> None:
    owner = worker_for_instance(workers, instance_id)
    if owner is not None:
        raise InputError(f"instance {instance_id} is already worker {owner.worker_id!r}")
