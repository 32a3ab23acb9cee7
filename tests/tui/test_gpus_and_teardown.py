"""GPU detail on simulated GPUs that follow real runs, and the teardown modal's gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Input, TabbedContent

from fakes.sandbox_fleet import DemoWorker, install_demo_workers
from runyard.core.models import PullRecord, Run, RunStatus
from runyard.core.runs import RunSpec, add_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.sim.fake_nvidia_smi import write_fake_nvidia_smi
from runyard.tui.app import RunyardApp
from runyard.tui.modals.teardown import TeardownModal
from runyard.tui.views.fleet import FleetView
from runyard.tui.views.gpus import GpuView

from .harness import console, settle, start, until, write_runs

SIZE = (170, 50)
GPU = {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "power_limit_w": 700.0,
       "sm_clock_max_mhz": 1980}  # fmt: skip
ZOMBIE = {"pid": 999_123, "used_memory_mib": 4096, "process_name": "python3"}


@pytest.fixture
def local_gpus(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two simulated GPUs on the local worker (nvidia-smi first on PATH), one with a zombie."""
    bin_dir = tmp_path / "bin"
    write_fake_nvidia_smi(bin_dir, [dict(GPU, zombies=[ZOMBIE]), GPU], workspace.root)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")


def gpu_view(app: RunyardApp) -> GpuView:
    view = app.views["gpus"]
    assert isinstance(view, GpuView)
    return view


def cells(view: GpuView) -> list[list[str]]:
    from runyard.tui.widgets.fast_table import FastTable

    table = view.query_one(FastTable)
    rows = [table.row(key) for key in table.order]
    return [["".join(t for t, _ in c) for c in row.cells] for row in rows if row is not None]


@pytest.mark.usefixtures("local_gpus")
async def test_gpu_detail_follows_runs_and_marks_zombies(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    run = add_run(store, RunSpec(command="sleep 60", name="gpu-hog"))
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("enter")  # Fleet -> GPUs of the local worker
        await settle(pilot)
        view = gpu_view(app)
        assert app.query_one(TabbedContent).active == "gpus"
        assert len(view.query("GpuPanel")) == 2
        await until(pilot, lambda: [r[4] for r in cells(view)] == ["ZOMBIE"])
        # Start a run: the simulated GPU 0 gets busy, and its process is the run's.
        app.controller.dispatch(None)
        await until(
            pilot,
            lambda: any("gpu-hog" in r[5] for r in cells(view)),
            app.controller.refresh_fleet,
        )
        rows = {r[1]: r for r in cells(view)}
        assert rows[str(ZOMBIE["pid"])][4] == "ZOMBIE"
        hog = next(r for r in rows.values() if "gpu-hog" in r[5])
        assert hog[4] == "run" and run.id in hog[5]
        trace = app.state.workers["local"].traces[0]
        assert trace.util[-1] is not None and trace.util[-1] >= 85
        title = str(view.query_one(".gpu-0 .gpu-title").render())
        assert "GPU0" in title and "working" in title
        app.controller.cancel([run.id])
        await settle(pilot)


@pytest.mark.usefixtures("local_gpus")
async def test_switching_between_workers_with_the_same_gpu_indexes(workspace: Workspace) -> None:
    """Each worker has a GPU 0: `]` pressed fast must never mount a panel over the one
    still being removed (it raised DuplicateIds and closed the console)."""
    one_gpu = DemoWorker("box-1gpu", "default", "generic-ssh", (GPU,))
    three_gpus = DemoWorker("box-3gpu", "default", "generic-ssh", (GPU, GPU, GPU))
    install_demo_workers(workspace, [one_gpu, three_gpus])
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await until(
            pilot,
            lambda: all(ws.gpus() for ws in app.state.workers.values()),
            app.controller.refresh_fleet,
        )
        await pilot.press("4")
        view = gpu_view(app)
        seen = set()
        for _ in range(7):
            await pilot.press("right_square_bracket")
            seen.add(view.worker_name)
        await settle(pilot)
        assert seen == {"local", "box-1gpu", "box-3gpu"}
        ws = app.state.workers[view.worker_name or ""]
        await until(pilot, lambda: len(view.query("GpuPanel")) == len(ws.gpus()))
        assert app.is_running


# ---------------------------------------------------------------- teardown


def on_vast(run_id: str, *, verified: bool) -> Run:
    return Run(
        id=run_id,
        name=f"train-{run_id}",
        command="python train.py",
        status=RunStatus.DONE,
        worker="vast-h100-1",
        attempts=1,
        exit_code=0,
        run_dir="/nonexistent",
        ended_at="2025-06-01T10:00:00Z",
        pull=PullRecord(
            at="2025-06-01T10:05:00Z",
            files=2,
            bytes=10,
            verified=verified,
            problems=[] if verified else ["model.pt: sha256 differs from the worker's"],
        ),
    )


VAST = DemoWorker("vast-h100-1", "vastai", "vast", (GPU,), price_dph=2.5, instance_id=37906248)


async def open_teardown(pilot: Pilot[int], app: RunyardApp, key: str = "t") -> TeardownModal:
    await start(pilot)
    fleet = app.views["fleet"]
    assert isinstance(fleet, FleetView)
    fleet.table.move_cursor("vast-h100-1")
    await pilot.press(key)
    await settle(pilot)
    assert isinstance(app.screen, TeardownModal)
    return app.screen


async def test_teardown_modal_refuses_with_an_unverified_pull(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    install_demo_workers(workspace, [VAST])
    write_runs(store, [on_vast("r1", verified=True), on_vast("r2", verified=False)])
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_teardown(pilot, app)
        assert not modal.plan.allowed
        verdict = str(modal.query_one(".verdict").render())
        assert verdict.startswith("REFUSED") and "r2" in verdict and "not verified" in verdict
        assert modal.query_one(Input).disabled
        assert modal.query_one("#confirm", Button).disabled
        body = str(modal.query_one("#plan").render())
        assert "LOST: instance disk" in body and "irreversible" in body
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, TeardownModal)
        assert store.worker("vast-h100-1").enabled


async def test_teardown_modal_accepts_only_the_exact_name(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    install_demo_workers(workspace, [VAST])
    write_runs(store, [on_vast("r1", verified=True)])
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_teardown(pilot, app)
        assert modal.plan.allowed
        confirm = modal.query_one("#confirm", Button)
        for wrong in ("vast-h100", "VAST-H100-1", "vast-h100-1 "):
            modal.query_one(Input).value = wrong
            await pilot.pause()
            assert confirm.disabled
        modal.query_one(Input).value = ""
        await pilot.press(*"vast-h100-", "enter")  # a wrong name does not submit
        assert isinstance(app.screen, TeardownModal)
        await pilot.press("1")  # typed into the box (not a view switch): now the exact name
        assert not confirm.disabled
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, TeardownModal)
        assert store.worker("vast-h100-1").enabled is False
        assert any("disabled in workers.yaml" in n.message for n in app._notifications)


async def test_stop_shows_what_survives_and_what_still_bills(
    workspace: Workspace, store: WorkspaceStore
) -> None:
    install_demo_workers(workspace, [VAST])
    app = console(workspace)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_teardown(pilot, app, key="x")
        body = str(modal.query_one("#plan").render())
        assert "STOP vast-h100-1" in body and "KEPT: instance disk" in body
        assert "still bills storage" in body
        assert "Cost so far" in body
