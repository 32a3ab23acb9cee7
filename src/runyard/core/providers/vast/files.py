"""`VastFiles`: the Vast operations that only read and write workspace files.

Settings, the machine blacklist and the cost ledger need no API call, no event loop and no
SDK, so `runyard vast blacklist` and `runyard cost --offline` stay file-only. `VastService`
(service.py) adds the API operations on top.
"""

from __future__ import annotations

from runyard.core.providers.vast import ledger
from runyard.core.providers.vast.blacklist import (
    BlacklistEntry,
    add_to_blacklist,
    banned_machines,
    blacklist_path,
    load_blacklist,
    remove_from_blacklist,
)
from runyard.core.providers.vast.settings import VastSettings, load_vast_settings
from runyard.core.store.workspace_store import WorkspaceStore


class VastFiles:
    """The `vast:` settings, the blacklist file and the ledger of one workspace."""

    def __init__(self, store: WorkspaceStore) -> None:
        self.store = store
        self.settings: VastSettings = load_vast_settings(
            store.workspace.settings_path, store.warnings
        )

    def banned(self) -> frozenset[int]:
        return banned_machines(blacklist_path(self.store, self.settings.blacklist_file))

    def blacklist(self) -> list[BlacklistEntry]:
        return load_blacklist(blacklist_path(self.store, self.settings.blacklist_file))

    def ban(self, machine_id: int, reason: str) -> bool:
        path = blacklist_path(self.store, self.settings.blacklist_file)
        return add_to_blacklist(self.store, path, machine_id, reason)

    def unban(self, machine_id: int) -> bool:
        path = blacklist_path(self.store, self.settings.blacklist_file)
        return remove_from_blacklist(self.store, path, machine_id)

    def cost(self) -> ledger.CostReport:
        """From the ledger alone: no API call (the console header)."""
        return ledger.cost_report(self.store)
