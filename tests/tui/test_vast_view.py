"""Pilot tests of the Vast view against the SIMULATED Vast marketplace."""

from __future__ import annotations

import pytest

from fakes.vast_workspace import configure_vast, sim_fixture  # noqa: F401  (fixture)
from runyard.core.models import SSHSettings, Worker
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace
from runyard.sim.vast_api import SimVast
from runyard.tui.app import RunyardApp
from runyard.tui.modals.dialogs import ConfirmModal
from runyard.tui.views.vast import VastView, parse_query
from runyard.tui.widgets.fast_table import FastTable
from runyard.tui.widgets.text_line import TextLine

from .harness import console, settle, start, until

pytestmark = pytest.mark.timeout(120)
SIZE = (160, 45)
QUIET_WATCHER = {"poll_seconds": 0.05, "max_instances": 0}  # polls, never rents


@pytest.fixture
def client_home(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated market needs no SSH client home in these tests."""


def vast_view(app: RunyardApp) -> VastView:
    view = app.view("vast")
    assert isinstance(view, VastView)
    return view


def line(view: VastView, selector: str) -> str:
    return view.query_one(selector, TextLine).text


def test_parse_query_splits_off_the_reference_job() -> None:
    text, reference = parse_query("gpu_name=RTX_3060 ref=10@100 dph<0.5")
    assert text == "gpu_name=RTX_3060 dph<0.5"
    assert reference is not None and reference.hours == 10 and reference.dlperf == 100
    assert parse_query("ref=x")[1] is None


async def test_vast_view_without_a_key_says_so(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VAST_API_KEY", "VAST_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(workspace.root / "no-config"))
    monkeypatch.setenv("HOME", str(workspace.root / "no-home"))
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("6")
        await settle(pilot)
        view = vast_view(app)
        assert "no Vast API configured: set VAST_API_KEY" in line(view, ".instances-title")
        assert view.instances_table.row_count == 0
        assert app.controller.errors == []


async def test_vast_view_instances_offers_and_watcher(workspace: Workspace, sim: SimVast) -> None:
    configure_vast(workspace, sim, QUIET_WATCHER)
    tracked = await sim.rent(5000002)
    stray = await sim.rent(5000001, label="forgotten at 2 AM")
    await sim.wait_running(tracked.id)
    await sim.wait_running(stray.id)
    add_worker(
        WorkspaceStore(workspace),
        Worker(
            worker_id="picked",
            kind="ssh",
            ssh=SSHSettings(host="127.0.0.1", port=22),
            instance_id=tracked.id,
            platform="vast",
            enabled=False,
        ),
    )
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, probe=False)
        await pilot.press("6")
        view = vast_view(app)
        await until(pilot, lambda: view.instances_table.row_count == 2, timeout=30)

        instances = view.instances_table
        assert instances.row(str(tracked.id)) is not None
        tracked_row = instances.row(str(tracked.id))
        stray_row = instances.row(str(stray.id))
        assert tracked_row is not None and stray_row is not None
        assert "picked" in str(tracked_row.cells[-1])
        assert "UNTRACKED" in str(stray_row.cells[-1])
        assert "1 UNTRACKED" in line(view, ".instances-title")

        offers = view.offers_table
        assert 0 < offers.row_count <= 10
        ranked = [o.offer.dlp_per_dollar or 0.0 for o in view.offers]
        assert ranked == sorted(ranked, reverse=True)
        assert "burn $" in line(view, ".spend-line")

        # `/` edits the query; a reference job fills the job-cost column.
        await pilot.press("slash")
        await pilot.press(*"ref=10")
        await pilot.press("enter")
        await settle(pilot)
        assert view.query_text == "ref=10"
        assert view.offers and all(o.est_cost is not None for o in view.offers)

        # `w` starts the watcher as a worker; it polls; `w` again stops it.
        assert "watcher [b]off" in line(view, ".watcher-line")
        view.instances_table.focus()
        await pilot.press("w")
        await until(
            pilot,
            lambda: view.watcher_state is not None and view.watcher_state.polls >= 1,
        )
        text = line(view, ".watcher-line")
        assert "watcher [b]on" in text and "poll(s)" in text
        await pilot.press("w")
        await until(pilot, lambda: not app.controller.busy("vast-watch"))
        assert "watcher [b]off" in line(view, ".watcher-line")
        assert view.watcher_state is not None and not view.watcher_state.running

        # `R` asks before reconcile --fix.
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        assert isinstance(app.focused, FastTable)
        assert app.controller.errors == []
