"""Regenerate `screens/*.svg`: every console view, taken from the real app on the demo fleet.

    uv run python -m runyard.tui.screenshots [--out screens] [--warmup 45] [--workers 4]

It does what `runyard demo` does, in a temporary folder: prepares a fresh demo workspace,
starts the SIMULATED fleet (loopback SSH servers with simulated GPUs, in a process of their
own), pushes the demo code and queues and dispatches the demo runs (longer ones, so they
are still training when the last view is taken). Then it opens the real console headless,
labelled SIMULATED with its timers and auto-dispatch on, lets the GPU history fill for
`--warmup` seconds, and visits each view and saves it. Before the alerts view it gives the
patrol something to find on two idle boxes (a wedged GPU driver, a stopped SSH server),
through the fleet's own simulated controls. Every run it started is cancelled
and the fleet is stopped (its boxes powered off) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from runyard.core.control import cancel_run
from runyard.core.errors import OperationalError, RunyardError
from runyard.core.models import RunStatus
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.sim.demo_workspace import CONSOLE_SLEEP, prepare_demo_workspace, stage_demo
from runyard.sim.fake_nvidia_smi import FAULT_DRIVER
from runyard.sim.fleet import DEFAULT_WORKERS, SimulatedFleet, check_worker_count
from runyard.tui.app import RunyardApp
from runyard.tui.services import ConsoleServices
from runyard.tui.views.fleet import FleetView

SIZE = (160, 44)
LABEL = "demo-workspace"
# The demo's runs, made long enough to be training still when the last view is taken.
RECORDING_EPOCHS = 600  # x CONSOLE_SLEEP = 5 minutes; cancelled when the recording ends


async def _wait(pilot: Pilot[int], seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Let the real timers run (this is a recording, not a test): `seconds` or `until`."""
    for _ in range(max(1, round(seconds / 0.25))):
        if until is not None and until():
            break
        await asyncio.sleep(0.25)
    await pilot.pause()


def _gpu_box(sim: SimulatedFleet, app: RunyardApp) -> str:
    """The box for the GPU detail: the most GPUs, preferring one a run is training on."""
    busy = {r.worker for r in app.state.runs if r.is_active}
    boxes = [b for b in sim.info.workers if b.gpus]
    if not boxes:
        return sim.info.workers[0].name
    return max(boxes, key=lambda b: (b.name in busy, b.gpus)).name


async def _stage_findings(sim: SimulatedFleet, app: RunyardApp, pilot: Pilot[int]) -> None:
    """Give the patrol something to find, on boxes no run uses: a SIMULATED wedged GPU
    driver on one, a stopped SSH server on another (the fleet's own controls)."""
    busy = {r.worker for r in app.state.runs if r.is_active}
    idle = [b.name for b in sim.info.workers if b.gpus and b.name not in busy]
    if idle:
        await asyncio.to_thread(sim.set_gpu_fault, idle[0], FAULT_DRIVER)
    if len(idle) > 1:
        await asyncio.to_thread(sim.stop_worker, idle[1])
    stopped = idle[1:2]

    def seen() -> bool:
        unreachable = {n for n, ws in app.state.workers.items() if not ws.reachable}
        return len(app.state.alerts) >= len(idle[:2]) and unreachable >= set(stopped)

    for _ in range(10):  # the fleet view and the patrol both notice (or 20 s pass)
        app.controller.refresh_fleet()
        app.controller.patrol()
        await _wait(pilot, 2.0, until=seen)
        if seen():
            break


def _teardown_box(sim: SimulatedFleet, app: RunyardApp) -> str:
    """The box where the failing run ran (its results never pulled: the gate refuses)."""
    failed = next((r for r in app.state.runs if r.status is RunStatus.FAILED and r.worker), None)
    if failed is not None and failed.worker is not None:
        return failed.worker
    return sim.info.workers[-1].name


async def record(workspace: Workspace, sim: SimulatedFleet, out: Path, warmup: float) -> list[Path]:
    served = {box.name for box in sim.info.workers}
    staged = await stage_demo(workspace, served, epochs=RECORDING_EPOCHS, sleep=CONSOLE_SLEEP)
    if staged.push_failures:
        raise OperationalError(f"could not push the demo code: {staged.push_failures}")
    store = WorkspaceStore(workspace)
    services = ConsoleServices(workspace)
    app = RunyardApp(services, simulated=True, workspace_label=LABEL, auto_dispatch=True)
    saved: list[Path] = []

    def shot(name: str) -> None:
        path = out / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(out))
        saved.append(path)
        print(f"saved {path}")

    async def step(keys: tuple[str, ...], settle: float = 1.0) -> None:
        await pilot.press(*keys)
        await _wait(pilot, settle)

    async with app.run_test(size=SIZE) as pilot:
        try:
            await _wait(pilot, warmup)
            app.controller.patrol()
            await _wait(pilot, 3.0)
            shot("fleet")
            await step(("2",))
            shot("runs")
            running = [r for r in app.state.runs if r.is_active][:2]
            app.follow_logs(running)
            await _wait(pilot, 6.0)
            shot("logs")
            app.show_gpu_detail(_gpu_box(sim, app))
            await _wait(pilot, 4.0)
            shot("gpus")
            await _stage_findings(sim, app, pilot)
            await step(("5",))
            shot("alerts")
            await step(("1",))
            fleet = app.views["fleet"]
            assert isinstance(fleet, FleetView)
            fleet.table.move_cursor(_teardown_box(sim, app))
            await step(("t",), 2.0)
            shot("teardown")
            await step(("escape", "2", "a"))
            shot("run-form")
            await step(("escape", "question_mark"))
            shot("help")
            await step(("escape",))
        finally:
            await _stop_runs(store, services)
    return saved


async def _stop_runs(store: WorkspaceStore, services: ConsoleServices) -> None:
    """Cancel what the recording started (the fleet's stop powers the boxes off anyway)."""
    for run in store.runs():
        if run.is_active or run.status is RunStatus.PENDING:
            try:
                await cancel_run(store, services.fleet, run.id)
            except RunyardError as exc:
                print(f"could not cancel {run.name}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runyard.tui.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("screens"), help="where the SVGs go")
    parser.add_argument(
        "--warmup", type=float, default=45.0, help="seconds of real time before the first shot"
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="simulated SSH workers (as the demo)"
    )
    args = parser.parse_args(argv)
    check_worker_count(args.workers)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runyard-screens-") as tmp:
        workspace = prepare_demo_workspace(Path(tmp) / LABEL, fresh=True)
        with SimulatedFleet(workspace.root, args.workers) as sim:
            asyncio.run(record(workspace, sim, out, args.warmup))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RunyardError as exc:
        sys.stderr.write(f"runyard screenshots: {exc}\n")
        sys.exit(exc.exit_code)
