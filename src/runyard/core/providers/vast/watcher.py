"""The watcher: poll the market, and rent what passes every threshold, within budget.

`decide` is pure: offers + the account's live instances + thresholds + the blacklist ->
which offers to rent, and why each other offer was passed over. `VastWatcher` runs it
every `poll_seconds` (two API calls a poll: one offer search, one instance listing),
rents through the same flow as `runyard vast rent`, and writes every decision to the
events log. It runs in the foreground (`runyard vast watch`, for a tmux pane) or as a
task in the console; state for a view is in `VastWatcher.state`.

Budget and instance count are the whole account's: every live instance counts (a
running one at its $/hour, a stopped one at its disk's), rented by runyard or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.core.errors import RunyardError
from runyard.core.providers.base import (
    Compute,
    ComputeWithCreateInstanceSupport,
    InstanceState,
    Offer,
    ProviderInstance,
)
from runyard.core.providers.vast.blacklist import banned_machines, blacklist_path
from runyard.core.providers.vast.ledger import observe
from runyard.core.providers.vast.offers import (
    OfferFilters,
    RankedOffer,
    new_search,
    passes,
    rank_offers,
)
from runyard.core.providers.vast.rent import LaunchSteps, RentRequest, plan_rent, rent
from runyard.core.providers.vast.settings import VastSettings, WatcherSettings
from runyard.core.store.workspace_store import WorkspaceStore

WATCHER_PROVENANCE = "AUTO-RENTED by the watcher"


def watcher_filters(thresholds: WatcherSettings) -> OfferFilters:
    return OfferFilters(
        gpu_names=tuple(thresholds.gpu_names),
        num_gpus=thresholds.num_gpus,
        max_dph=thresholds.max_dph,
        min_reliability=thresholds.min_reliability,
        min_dlp_per_dollar=thresholds.min_dlp_per_dollar,
    )


def burn_dph(instance: ProviderInstance) -> float:
    """What a live instance costs per hour now (running: its price; else its disk)."""
    if instance.state in (InstanceState.RUNNING, InstanceState.UNKNOWN):
        return instance.price_dph
    return instance.storage_dph


@dataclass(frozen=True)
class WatchDecision:
    """One poll's verdict: what to rent, and why every other offer was passed over."""

    at: float
    considered: int
    rent: tuple[RankedOffer, ...]
    skipped: tuple[tuple[int, str], ...]  # (offer id, reason)
    live_instances: int
    fleet_dph: float

    def summary(self) -> str:
        chosen = ", ".join(f"offer {r.offer.id} ({r.offer.gpu_name})" for r in self.rent)
        return (
            f"{self.considered} offers, {self.live_instances} live instances at "
            f"${self.fleet_dph:.4f}/h: " + (f"renting {chosen}" if chosen else "nothing to rent")
        )

    def to_event(self) -> dict[str, Any]:
        return {
            "considered": self.considered,
            "rent": [r.offer.id for r in self.rent],
            "skipped": {str(offer_id): reason for offer_id, reason in self.skipped[:20]},
            "skipped_total": len(self.skipped),
            "live_instances": self.live_instances,
            "fleet_dph": round(self.fleet_dph, 6),
        }


def decide(
    offers: Sequence[Offer],
    instances: Sequence[ProviderInstance],
    thresholds: WatcherSettings,
    blacklist: frozenset[int],
    now: float,
) -> WatchDecision:
    """Best DLP/$ first, rent while every threshold holds (pure)."""
    filters = watcher_filters(thresholds)
    count = len(instances)  # an exited or stopped box is still on the account, billing disk
    fleet = sum(burn_dph(i) for i in instances)
    chosen: list[RankedOffer] = []
    skipped: list[tuple[int, str]] = []
    machines_taken: set[int] = set()
    for ranked in rank_offers(offers, blacklist=blacklist):
        offer = ranked.offer
        reason = passes(offer, filters)
        if reason is None and ranked.blacklisted:
            reason = f"machine {offer.machine_id} is blacklisted"
        if reason is None and offer.machine_id in machines_taken:
            reason = f"machine {offer.machine_id} already chosen this poll"
        if reason is None and len(chosen) >= thresholds.max_rentals_per_poll:
            reason = f"already renting {len(chosen)} this poll (max_rentals_per_poll)"
        if reason is None and count + len(chosen) >= thresholds.max_instances:
            reason = f"{count + len(chosen)} live instances reach max_instances {thresholds.max_instances}"
        if reason is None:
            after = fleet + sum(r.offer.price_dph for r in chosen) + offer.price_dph
            if after > thresholds.budget_dph + 1e-9:
                reason = (
                    f"fleet would burn ${after:.4f}/h, over budget_dph ${thresholds.budget_dph:g}"
                )
        if reason is not None:
            skipped.append((offer.id, reason))
            continue
        chosen.append(ranked)
        if offer.machine_id is not None:
            machines_taken.add(offer.machine_id)
    return WatchDecision(now, len(offers), tuple(chosen), tuple(skipped), count, fleet)


@dataclass
class WatcherState:
    """What the console's Vast view shows about the watcher."""

    running: bool = False
    polls: int = 0
    last_poll_at: float | None = None
    next_poll_at: float | None = None
    last_decision: WatchDecision | None = None
    last_error: str | None = None
    rented: list[tuple[int, str]] = field(default_factory=list)  # (instance id, worker)


Renter = Callable[[RankedOffer], Awaitable[tuple[int, str]]]


class VastWatcher:
    """The polling loop around `decide`; rents through `rent.rent` unless given a renter."""

    def __init__(
        self,
        store: WorkspaceStore,
        compute: Compute,
        settings: VastSettings,
        *,
        renter: Renter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(compute, ComputeWithCreateInstanceSupport):
            raise TypeError(f"{compute.name} cannot rent: no watcher for it")
        self.store = store
        self.compute = compute
        self.market: ComputeWithCreateInstanceSupport = compute
        self.settings = settings
        self.renter = renter or self._rent
        self.clock = clock
        self.state = WatcherState()

    async def poll_once(self) -> WatchDecision:
        """Search, list, decide, log the decision, rent what was chosen."""
        thresholds = self.settings.watcher
        search = new_search(
            thresholds.query,
            watcher_filters(thresholds),
            interruptible=thresholds.interruptible,
            storage_gb=self.settings.disk_gb,
        )
        offers = await self.market.search_offers(
            search.query,
            search.limit,
            interruptible=search.interruptible,
            storage_gb=search.storage_gb,
        )
        instances = await self.compute.list_instances()
        observe(self.store, instances)  # the watcher's instances feed the cost ledger too
        banned = banned_machines(blacklist_path(self.store, self.settings.blacklist_file))
        decision = decide(offers, instances, thresholds, banned, self.clock())
        self.store.events.append("vast.watch.decision", **decision.to_event())
        self.state.polls += 1
        self.state.last_poll_at = decision.at
        self.state.last_decision = decision
        self.state.last_error = None
        for chosen in decision.rent:
            try:
                instance_id, worker = await self.renter(chosen)
            except RunyardError as exc:
                self.state.last_error = str(exc)
                self.store.events.append(
                    "vast.watch.rent_failed", offer_id=chosen.offer.id, error=str(exc)
                )
                continue
            self.state.rented.append((instance_id, worker))
            self.store.events.append(
                "vast.watch.rented",
                offer_id=chosen.offer.id,
                instance_id=instance_id,
                worker=worker,
            )
        return decision

    async def _rent(self, chosen: RankedOffer) -> tuple[int, str]:
        request = RentRequest(
            offer_id=chosen.offer.id,
            interruptible=chosen.offer.interruptible,
            provenance=WATCHER_PROVENANCE,
        )
        steps = LaunchSteps(setup=self.settings.watcher.setup)
        plan = await plan_rent(self.store, self.market, self.settings, request, steps)
        outcome = await rent(self.store, self.compute, self.settings, plan)
        return outcome.instance_id, outcome.worker.worker_id

    async def run(
        self,
        stop: asyncio.Event,
        on_poll: Callable[[WatcherState], None] | None = None,
    ) -> None:
        """Poll until `stop` is set; an API error is logged and the next poll tries again."""
        self.state.running = True
        self.store.events.append("vast.watch.started")
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                except RunyardError as exc:
                    self.state.last_error = str(exc)
                    self.store.events.append("vast.watch.error", error=str(exc))
                interval = self.settings.watcher.poll_seconds
                self.state.next_poll_at = self.clock() + interval
                if on_poll is not None:
                    on_poll(self.state)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            self.state.running = False
            self.state.next_poll_at = None
            self.store.events.append("vast.watch.stopped")
