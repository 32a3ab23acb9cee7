"""The provider interface: a minimal async compute API plus opt-in capability mixins.

Shaped after dstack's backends: every provider lists, gets and destroys instances; the
ones that can also search offers and create instances, or stop and start them, say so by
inheriting a mixin, and callers check with `isinstance` instead of catching
`NotImplementedError`. Destroy is idempotent: destroying an instance that is already gone
is success, so a retried teardown never fails on its own earlier success.

Provider SDKs are synchronous; implementations run them in a thread (`asyncio.to_thread`)
so an event loop (the console's) never blocks on the network.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class InstanceState(StrEnum):
    """A provider-neutral lifecycle state."""

    PROVISIONING = "provisioning"  # created, image loading, not yet running
    RUNNING = "running"
    STOPPED = "stopped"  # parked by the operator: disk kept (and billed)
    EXITED = "exited"  # the container ended or the host dropped it
    UNKNOWN = "unknown"


# States where the instance's processes are not running: runs there are lost.
DOWN_STATES = frozenset({InstanceState.STOPPED, InstanceState.EXITED})


@dataclass(frozen=True)
class Endpoint:
    """Where SSH answers for an instance."""

    host: str
    port: int


@dataclass(frozen=True)
class ProviderInstance:
    """One live instance as the provider reports it (`raw` keeps the provider's record)."""

    id: int
    state: InstanceState
    status_text: str  # the provider's own words: "loading", "running", "exited" ...
    ssh: Endpoint | None
    price_dph: float  # $/hour while running
    storage_dph: float  # $/hour for the disk, billed while running *and* stopped
    gpu_name: str
    num_gpus: int
    machine_id: int | None
    label: str
    started_at: float | None  # epoch seconds
    disk_gb: float | None = None
    location: str = ""
    interruptible: bool = False  # a bid: a higher bid can pause it at any moment
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Offer:
    """A rentable machine: what it has and what it costs (`raw` keeps the provider's record)."""

    id: int
    machine_id: int | None
    gpu_name: str
    num_gpus: int
    price_dph: float  # what renting it costs per hour (the bid for interruptible offers)
    dlperf: float | None  # deep-learning performance score, where the provider has one
    reliability: float | None
    location: str
    interruptible: bool
    disk_gb: float | None = None
    storage_cost_gb_month: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dlp_per_dollar(self) -> float | None:
        """Performance per dollar-hour: the ranking key of offer hunting."""
        if self.dlperf is None or self.price_dph <= 0:
            return None
        return self.dlperf / self.price_dph


@dataclass(frozen=True)
class InstanceRequest:
    """What to run on a new instance."""

    image: str
    disk_gb: float
    label: str = ""
    onstart: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    bid_dph: float | None = None  # interruptible: the price bid per hour


class Compute(ABC):
    """What every provider can do."""

    name: str

    @abstractmethod
    async def list_instances(self) -> list[ProviderInstance]:
        """Every instance of the account (all pages)."""

    @abstractmethod
    async def get_instance(self, instance_id: int) -> ProviderInstance | None:
        """One instance, or None when the provider no longer knows it."""

    @abstractmethod
    async def destroy_instance(self, instance_id: int) -> bool:
        """Destroy it; True if it existed, False if it was already gone (never an error)."""


class ComputeWithCreateInstanceSupport(ABC):
    """Providers with a marketplace: search offers and rent one."""

    @abstractmethod
    async def search_offers(
        self,
        query: Mapping[str, Any],
        limit: int,
        *,
        interruptible: bool = False,
        storage_gb: float = 10.0,
    ) -> list[Offer]:
        """Offers matching a provider-specific filter, priced for `storage_gb` of disk."""

    @abstractmethod
    async def create_instance(self, offer_id: int, request: InstanceRequest) -> int:
        """Rent offer `offer_id`; returns the new instance's id."""


class ComputeWithStopSupport(ABC):
    """Providers that can park an instance and bring it back."""

    @abstractmethod
    async def stop_instance(self, instance_id: int) -> None: ...

    @abstractmethod
    async def start_instance(self, instance_id: int) -> None: ...


class ComputeWithSSHKeySupport(ABC):
    """Providers that can authorize a public key on a running instance."""

    @abstractmethod
    async def attach_ssh_key(self, instance_id: int, public_key: str) -> None: ...
