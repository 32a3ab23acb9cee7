"""The watcher against the SIMULATED marketplace: thresholds, blacklist, registration, log."""

from __future__ import annotations

import asyncio

import pytest

from fakes.vast_workspace import configure_vast, sim_fixture  # noqa: F401  (fixture)
from runyard.core.providers.vast.service import VastService
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.sim.vast_api import SimVast

pytestmark = pytest.mark.timeout(120)

THRESHOLDS = {
    "poll_seconds": 0.05,
    "max_dph": 0.10,
    "min_dlp_per_dollar": 150,
    "max_instances": 2,
    "budget_dph": 0.30,
    "setup": True,
}


async def test_watcher_rents_within_thresholds_and_skips_the_blacklist(
    workspace: Workspace, sim: SimVast
) -> None:
    configure_vast(workspace, sim, THRESHOLDS)
    vast = VastService(WorkspaceStore(workspace))
    vast.ban(10003, "ghost machine: SSH never answers")  # the best offer's machine (RTX A4000)
    watcher = vast.watcher()

    first = await watcher.poll_once()
    assert [r.offer.machine_id for r in first.rent] == [10004]  # RTX 3070, DLP/$ 207
    reasons = dict(first.skipped)
    assert "blacklisted" in reasons[5000003]
    assert "max_rentals_per_poll" in reasons[5000001]  # one rental a poll
    # Too dear (RTX 4090) or too slow (GTX 1660 S): the API's query already left them out.
    assert 5000008 not in reasons and 5000005 not in reasons
    rented_id, worker_name = watcher.state.rented[0]
    worker = vast.store.worker(worker_name)
    assert worker.instance_id == rented_id and worker.notes.startswith("AUTO-RENTED")
    assert all(i.offer.machine_id != 10003 for i in sim.instances.values())

    second = await watcher.poll_once()
    assert [r.offer.machine_id for r in second.rent] == [10001]  # RTX 3060, DLP/$ 177
    third = await watcher.poll_once()
    assert third.rent == () and third.live_instances == 2
    assert any("max_instances 2" in why for _, why in third.skipped)
    assert len(sim.instances) == 2

    events = vast.store.events.read()
    decisions = [e for e in events if e["event"] == "vast.watch.decision"]
    assert len(decisions) == 3 and decisions[0]["rent"] == [5000004]
    assert len([e for e in events if e["event"] == "vast.watch.rented"]) == 2
    assert len([e for e in events if e["event"] == "worker.setup"]) == 2


async def test_watcher_budget_counts_boxes_it_did_not_rent(
    workspace: Workspace, sim: SimVast
) -> None:
    configure_vast(workspace, sim, {**THRESHOLDS, "max_instances": 5, "budget_dph": 0.15})
    vast = VastService(WorkspaceStore(workspace))
    stray = await sim.rent(5000002)  # someone's RTX 3060 at ~$0.07/h, not in workers.yaml
    await sim.wait_running(stray.id)
    decision = await vast.watcher().poll_once()
    # The A4000 at ~$0.10/h would take the account to ~$0.17/h: over budget. The 3070 fits.
    assert [r.offer.id for r in decision.rent] == [5000004]
    assert "over budget_dph" in dict(decision.skipped)[5000003]


async def test_watcher_loop_survives_api_errors_and_stops_on_request(
    workspace: Workspace, sim: SimVast
) -> None:
    configure_vast(workspace, sim, {**THRESHOLDS, "max_instances": 0})
    vast = VastService(WorkspaceStore(workspace))
    watcher = vast.watcher()
    sim.fail(503, times=4)
    stop = asyncio.Event()
    polls: list[int] = []

    def on_poll(state: object) -> None:
        polls.append(watcher.state.polls)
        if len(polls) >= 3:
            stop.set()

    await asyncio.wait_for(watcher.run(stop, on_poll), timeout=30)
    assert not watcher.state.running
    events = [e["event"] for e in vast.store.events.read()]
    assert "vast.watch.error" in events and "vast.watch.decision" in events
    assert events[-1] == "vast.watch.stopped"
    assert sim.instances == {}  # max_instances 0: never rents
