"""Vast.ai: offers, renting, reconcile, the watcher, the cost ledger and gated teardown.

The `vastai` SDK (3 s to import) is loaded only inside `client.VastAPI`, on the first API
call; every other module here is pure or file-only.
"""
