"""`VastService`: the one door the CLI verbs and the console's Vast view use.

It reads the `vast:` settings once, resolves the API key only when an API call is about
to be made (so a console without a key still opens), and wraps the pieces: offer search
and ranking, the inventory, reconcile, rent, add-from-instance, gated stop/destroy,
start, the watcher and the cost ledger (the file-only part is `VastFiles`).
"""

from __future__ import annotations

from runyard.core.models import Worker
from runyard.core.providers.base import Compute, ComputeWithCreateInstanceSupport
from runyard.core.providers.vast import ledger
from runyard.core.providers.vast.files import VastFiles
from runyard.core.providers.vast.offers import (
    OfferFilters,
    RankedOffer,
    ReferenceJob,
    keep_passing,
    new_search,
    rank_offers,
)
from runyard.core.providers.vast.reconcile import (
    InventoryRow,
    ReconcileReport,
    inventory,
    reconcile,
)
from runyard.core.providers.vast.rent import (
    LaunchSteps,
    Progress,
    RentOutcome,
    RentPlan,
    RentRequest,
    add_worker_from_instance,
    no_progress,
    plan_rent,
    rent,
)
from runyard.core.providers.vast.teardown import (
    InstanceTeardownPlan,
    execute_instance_teardown,
    plan_instance_teardown,
    start_instance,
)
from runyard.core.providers.vast.watcher import VastWatcher
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.teardown import TeardownAction


class VastService(VastFiles):
    """Vast operations over one workspace (async where the API is called)."""

    def __init__(self, store: WorkspaceStore, compute: Compute | None = None) -> None:
        super().__init__(store)
        self._compute = compute

    @property
    def compute(self) -> Compute:
        """The provider; resolving the key here raises `InputError` when there is none."""
        if self._compute is None:
            from runyard.core.providers.vast.client import open_compute

            self._compute = open_compute(self.settings, self.store.workspace.root)
        return self._compute

    @property
    def market(self) -> ComputeWithCreateInstanceSupport:
        compute = self.compute
        assert isinstance(compute, ComputeWithCreateInstanceSupport)
        return compute

    # ------------------------------------------------------------ offers

    async def offers(
        self,
        query_text: str | None,
        filters: OfferFilters,
        *,
        reference: ReferenceJob | None = None,
        interruptible: bool = False,
        limit: int = 64,
    ) -> tuple[list[RankedOffer], list[str]]:
        """Ranked offers (best DLP/$ first) and the query parser's warnings."""
        search = new_search(
            query_text,
            filters,
            interruptible=interruptible,
            limit=limit,
            storage_gb=self.settings.disk_gb,
        )
        found = await self.market.search_offers(
            search.query, limit, interruptible=interruptible, storage_gb=search.storage_gb
        )
        ranked = rank_offers(keep_passing(found, filters), reference, self.banned())
        return ranked, search.warnings

    # ------------------------------------------------------------ instances and drift

    async def instances(self) -> list[InventoryRow]:
        live = await self.compute.list_instances()
        workers = self.store.workers()
        ledger.observe(self.store, live, workers)
        return inventory(workers, live)

    async def reconcile(self, fix: bool) -> ReconcileReport:
        return await reconcile(self.store, self.compute, fix)

    # ------------------------------------------------------------ renting

    async def plan_rent(self, request: RentRequest, steps: LaunchSteps) -> RentPlan:
        return await plan_rent(self.store, self.market, self.settings, request, steps)

    async def rent(self, plan: RentPlan, progress: Progress = no_progress) -> RentOutcome:
        return await rent(self.store, self.compute, self.settings, plan, progress)

    async def add_worker(
        self, name: str, instance_id: int, *, pool: str | None = None, key: str | None = None
    ) -> Worker:
        return await add_worker_from_instance(
            self.store, self.compute, self.settings, name, instance_id, pool=pool, key=key
        )

    # ------------------------------------------------------------ stop, start, destroy

    async def plan_teardown(self, instance_id: int, action: TeardownAction) -> InstanceTeardownPlan:
        return await plan_instance_teardown(self.store, self.compute, instance_id, action)

    async def teardown(self, instance_id: int, action: TeardownAction, typed: str | None) -> str:
        return await execute_instance_teardown(self.store, self.compute, instance_id, action, typed)

    async def start(self, instance_id: int, progress: Progress = no_progress) -> Worker | None:
        return await start_instance(self.store, self.compute, self.settings, instance_id, progress)

    # ------------------------------------------------------------ watcher, cost

    def watcher(self) -> VastWatcher:
        return VastWatcher(self.store, self.compute, self.settings)

    async def refresh_cost(self) -> ledger.CostReport:
        """List the instances (updating the ledger), then fold the ledger into costs."""
        await self.instances()
        return ledger.cost_report(self.store)
